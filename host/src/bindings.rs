//! Host bindings generated from `wit/` (the `stepgate:playbook` world).
//!
//! Every import is async (backends do I/O) and trappable (a broken limit
//! ends the run). Calls that return the shared WIT `error` variant use
//! [`crate::caps::CapError`], which is either that error, handed to the
//! playbook, or a trap that ends the run.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "playbook",
    imports: { default: async | trappable },
    exports: { default: async },
    trappable_error_type: {
        "stepgate:playbook/types.error" => crate::caps::CapError,
    },
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});

pub use self::stepgate::playbook::types::{
    AlertStatus, Capability, Error as WitError, RpcMethod, Value,
};
