//! Always the open node with the highest id (hot-reload tests swap it with `pin_low`).

use gatehouse_plugin_sdk::{Balancer, NoConfig, Node, PickRequest, export_plugin};

struct PinHigh;

impl Balancer for PinHigh {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(PinHigh)
    }

    fn pick(&mut self, nodes: &[Node], req: &PickRequest) -> Option<u32> {
        nodes.iter().filter(|n| !req.is_excluded(n.id)).map(|n| n.id).max()
    }
}

export_plugin!(balancer: PinHigh);
