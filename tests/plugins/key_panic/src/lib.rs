//! Panics whenever the request carries `x-user`, whatever its value: the load-time smoke
//! call, which sends every requested key present, must catch it before it serves.

use gatehouse_plugin_sdk::{Balancer, NoConfig, Node, PickRequest, RequestKey, export_plugin};

struct KeyPanic;

impl Balancer for KeyPanic {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(KeyPanic)
    }

    fn keys(&self) -> Vec<RequestKey> {
        vec![RequestKey::Header("x-user".into())]
    }

    fn pick(&mut self, nodes: &[Node], req: &PickRequest) -> Option<u32> {
        if req.key(0).is_some() {
            panic!("key_panic does not expect x-user");
        }
        nodes.iter().find(|n| !req.is_excluded(n.id)).map(|n| n.id)
    }
}

export_plugin!(balancer: KeyPanic);
