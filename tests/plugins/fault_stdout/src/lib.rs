//! Prints to stdout when asked to misbehave. Plugins have no stdout: blocking WASI I/O
//! from a gateway worker fails in the host, which must contain it like a trap.

use gatehouse_plugin_sdk::{Balancer, NoConfig, Node, PickRequest, RequestKey, export_plugin};

/// Behaves (first open node) unless the request carries `x-fault: 1`.
struct Fixture;

fn first_open(nodes: &[Node], req: &PickRequest) -> Option<u32> {
    nodes.iter().find(|n| !req.is_excluded(n.id)).map(|n| n.id)
}

impl Balancer for Fixture {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Fixture)
    }

    fn keys(&self) -> Vec<RequestKey> {
        vec![RequestKey::Header("x-fault".into())]
    }

    fn pick(&mut self, nodes: &[Node], req: &PickRequest) -> Option<u32> {
        if req.key(0) == Some(gatehouse_plugin_sdk::key_hash("1")) {
            misbehave(nodes, req)
        } else {
            first_open(nodes, req)
        }
    }
}

export_plugin!(balancer: Fixture);

fn misbehave(nodes: &[Node], req: &PickRequest) -> Option<u32> {
    println!("fault_stdout picks among {} nodes", nodes.len());
    first_open(nodes, req)
}
