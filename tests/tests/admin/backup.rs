//! Backup and restore through the admin API (export, then import into an empty
//! gateway), and admin writes on a gateway that has no config file.

use super::*;

fn shop(a: u16, b: u16, c: u16) -> String {
    format!(
        r#"
gateway: {{ access_log: false }}
services:
  - name: catalog
    versions:
      - version: "1"
        routes:
          - {{ uri: "/items/*", methods: [GET] }}
          - {{ uri: "/search" }}
  - name: orders
    versions:
      - version: "1"
        routes:
          - {{ uri: "/orders/*", hosts: [shop.local] }}
          - {{ uri: "/items/*", methods: [POST, PUT] }}
      - version: "2"
        routes:
          - {{ uri: "/v2/orders/*" }}
        upstream: {{ type: least_conn, retries: 1, timeout: {{ connect: "250ms", read: 2 }} }}
gateway_groups:
  - name: default
    services:
      - service: catalog
        version: "1"
        nodes: [ {{ host: 127.0.0.1, port: {a}, zone: z1 }} ]
      - service: orders
        version: "1"
        nodes: [ {{ host: 127.0.0.1, port: {b}, weight: 3 }} ]
  - name: other
    services:
      - service: orders
        version: "2"
        nodes: [ {{ host: 127.0.0.1, port: {c} }} ]
"#
    )
}

/// How a gateway answers a fixed set of requests: (status, node) for each.
async fn routing(base: &str) -> Vec<(u16, String)> {
    let client = Client::new();
    let probes: [(Method, &str, Option<&str>); 9] = [
        (Method::GET, "/items/1", None),
        (Method::POST, "/items/1", None),
        (Method::DELETE, "/items/1", None),
        (Method::GET, "/search", None),
        (Method::GET, "/search/x", None),
        (Method::GET, "/orders/7", Some("shop.local")),
        (Method::GET, "/orders/7", Some("other.local")),
        (Method::GET, "/v2/orders/7", None),
        (Method::GET, "/", None),
    ];
    let mut out = Vec::new();
    for (m, path, host) in probes {
        let headers: Vec<(&str, &str)> = host.map(|h| ("host", h)).into_iter().collect();
        let r = client.request(m, &format!("{base}{path}"), &headers, "").await.unwrap();
        out.push((r.status, r.node()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_an_empty_gateway_reproduces_routing() {
    let (a, b, c) = (
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    );
    let source = TestGateway::start(&shop(a.port(), b.port(), c.port())).await;
    // An edit made at runtime is part of the export.
    let r = put_json(
        &format!("{}/admin/v1/groups/default/services/catalog/nodes", source.admin),
        &json!({ "nodes": [ { "host": "127.0.0.1", "port": a.port(), "zone": "z2" } ] }),
    )
    .await;
    assert_eq!(r.status, 200);
    let expected = routing(&source.url).await;
    assert!(expected.iter().any(|(s, n)| *s == 200 && n == "a"), "{expected:?}");
    assert!(expected.iter().any(|(s, n)| *s == 200 && n == "b"), "{expected:?}");
    assert!(expected.iter().any(|(s, _)| *s == 404), "{expected:?}");

    for accept in ["application/yaml", "application/json"] {
        let export = send(
            Method::GET,
            &format!("{}/admin/v1/config", source.admin),
            &[("accept", accept)],
            "",
        )
        .await;
        assert_eq!(export.status, 200);
        assert!(export.header("content-type").unwrap().starts_with(accept));
        assert!(export.text().contains("z2"), "runtime edit missing from the export");

        let empty = TestGateway::start("gateway: { access_log: false }\n").await;
        assert!(routing(&empty.url).await.iter().all(|(s, _)| *s == 404));
        let r = send(
            Method::PUT,
            &format!("{}/admin/v1/config", empty.admin),
            &[],
            export.body.clone(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["persisted"], true);
        assert_eq!(routing(&empty.url).await, expected, "import from {accept}");
        let a_services = get_json(&format!("{}/admin/v1/services", source.admin)).await;
        let b_services = get_json(&format!("{}/admin/v1/services", empty.admin)).await;
        for name in ["catalog", "orders"] {
            assert_eq!(served(&a_services, name), served(&b_services, name));
        }
        // The import is in the file: a restart of the empty gateway serves it.
        let reloaded = config::load_file(&empty.config_path(), &Overrides::default()).unwrap();
        assert_eq!(reloaded.raw, source.gateway.control.served_raw());
        empty.stop().await;
    }

    // Restore: take a backup, change things, put the backup back.
    let backup = send(Method::GET, &format!("{}/admin/v1/config", source.admin), &[], "").await;
    let r = put_json(
        &format!("{}/admin/v1/groups/default/services/orders/nodes", source.admin),
        &json!({ "nodes": [ { "host": "127.0.0.1", "port": c.port() } ] }),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_ne!(routing(&source.url).await, expected);
    let r = send(
        Method::PUT,
        &format!("{}/admin/v1/config", source.admin),
        &[],
        backup.body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(routing(&source.url).await, expected);
    // An import that does not validate as a whole changes nothing.
    let generation = source.gateway.control.generation();
    let broken =
        shop(a.port(), b.port(), c.port()).replace("version: \"2\"\n        routes", "version: \"2\"\n        routez");
    let r = send(Method::PUT, &format!("{}/admin/v1/config", source.admin), &[], broken).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let dangling = shop(a.port(), b.port(), c.port()).replace(
        "service: orders\n        version: \"2\"",
        "service: orders\n        version: \"3\"",
    );
    let r = send(Method::PUT, &format!("{}/admin/v1/config", source.admin), &[], dangling).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"]["path"], "gateway_groups[1].services[0].version");
    assert_eq!(source.gateway.control.generation(), generation);
    assert_eq!(routing(&source.url).await, expected);
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_config_file_admin_writes_apply_in_memory_only() {
    let n1 = TestUpstream::start("n1").await;
    let n2 = TestUpstream::start("n2").await;
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let loaded = config::load_str(&petstore(n1.port(), n1.port()), "memory", &overrides, Path::new(".")).unwrap();
    let gw = Gateway::start(
        loaded,
        StartOptions {
            config_path: None,
            overrides,
            ..StartOptions::default()
        },
    )
    .await
    .unwrap();
    let admin = format!("http://{}", gw.admin_addr);
    let status = get_json(&format!("{admin}/admin/v1/status")).await;
    assert_eq!(status["persistence"], "memory");
    assert_eq!(status["source"], Value::Null);
    let r = put_json(
        &format!("{admin}/admin/v1/groups/test/services/petstore/nodes"),
        &json!({ "nodes": [ { "host": "127.0.0.1", "port": n2.port() } ] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["persisted"], false);
    let url = format!("http://{}/pet/1", gw.proxy_addr);
    assert_eq!(nodes_hit(&url, 4).await, BTreeSet::from(["n2".to_string()]));
    gw.shutdown().await;
}
