//! A well-formed component that implements some other world: the gateway must reject it
//! at load time as the wrong world.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "other", path: "wit" });

    struct Other;

    impl exports::test::other::picker::Guest for Other {
        fn pick(nodes: Vec<u32>) -> Option<u32> {
            nodes.first().copied()
        }
    }

    export!(Other);
}
