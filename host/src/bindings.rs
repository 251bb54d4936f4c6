//! Host bindings generated from `wit/` (the `stepgate:playbook` world).
//!
//! Every import is async (backends do I/O) and trappable (a broken limit
//! ends the run). Calls that return the shared WIT `error` variant use
//! [`CapError`], which is either that error, handed to the playbook, or a
//! trap that ends the run. The error lives here, with the bindings that
//! name it; `caps` converts what ends a run into it.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "playbook",
    imports: { default: async | trappable },
    exports: { default: async },
    trappable_error_type: {
        "stepgate:playbook/types.error" => CapError,
    },
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});

pub use self::stepgate::playbook::types::{
    AlertStatus, Capability, Element, Error as WitError, RpcMethod, Value,
};

/// What a capability call returns to the bindings: the WIT error, handed
/// to the playbook, or a trap that ends the run (a broken limit).
#[derive(Debug)]
pub enum CapError {
    Wit(WitError),
    Trap(wasmtime::Error),
}

impl From<WitError> for CapError {
    fn from(e: WitError) -> Self {
        CapError::Wit(e)
    }
}

impl From<&Element> for Value {
    /// An array's element as the value it stands for, so that what handles
    /// a value (binding, JSON, TOML) handles an element the same way.
    fn from(element: &Element) -> Value {
        match element {
            Element::Null => Value::Null,
            Element::Boolean(b) => Value::Boolean(*b),
            Element::Int(i) => Value::Int(*i),
            Element::Float(f) => Value::Float(*f),
            Element::Text(t) => Value::Text(t.clone()),
            Element::Bytes(b) => Value::Bytes(b.clone()),
            Element::Decimal(d) => Value::Decimal(d.clone()),
            Element::Timestamp(t) => Value::Timestamp(t.clone()),
        }
    }
}

impl Value {
    /// The value as plain JSON: decimals and timestamps stay exact text,
    /// bytes are hex, an array is a JSON array.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{Value as Json, json};
        match self {
            Value::Null => Json::Null,
            Value::Boolean(b) => json!(b),
            Value::Int(i) => json!(i),
            Value::Float(f) => json!(f),
            Value::Text(t) | Value::Decimal(t) | Value::Timestamp(t) => json!(t),
            Value::Bytes(b) => json!(hex::encode(b)),
            Value::Array(elements) => {
                Json::Array(elements.iter().map(|e| Value::from(e).to_json()).collect())
            }
        }
    }

    /// The value as an array's element, or `None` for an array (arrays do
    /// not nest).
    pub fn to_element(&self) -> Option<Element> {
        Some(match self {
            Value::Null => Element::Null,
            Value::Boolean(b) => Element::Boolean(*b),
            Value::Int(i) => Element::Int(*i),
            Value::Float(f) => Element::Float(*f),
            Value::Text(t) => Element::Text(t.clone()),
            Value::Bytes(b) => Element::Bytes(b.clone()),
            Value::Decimal(d) => Element::Decimal(d.clone()),
            Value::Timestamp(t) => Element::Timestamp(t.clone()),
            Value::Array(_) => return None,
        })
    }
}
