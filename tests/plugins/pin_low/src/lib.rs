//! Always the open node with the lowest id (hot-reload tests swap it with `pin_high`).

use gatehouse_plugin_sdk::{Balancer, NoConfig, Node, PickRequest, export_plugin};

struct PinLow;

impl Balancer for PinLow {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(PinLow)
    }

    fn pick(&mut self, nodes: &[Node], req: &PickRequest) -> Option<u32> {
        nodes.iter().filter(|n| !req.is_excluded(n.id)).map(|n| n.id).min()
    }
}

export_plugin!(balancer: PinLow);
