//! Canonical JSON text: object keys sorted at every depth.
//!
//! serde_json keeps an object's keys in the order they were inserted or
//! parsed in this build (the `cedar-policy` dependency turns on its
//! `preserve_order` feature for the whole workspace). Whatever is hashed,
//! compared as text, or handed on as text that used to be normalised (an
//! RPC answer, a JSON column, a flag's value) goes through here, so it
//! reads the same whatever order a server or a playbook put the keys in,
//! and as earlier versions wrote it. It owns no policy.

/// `value` as compact JSON text with the keys of every object sorted
/// (byte order, as serde_json's sorted map had them): the same answer read
/// twice in two key orders gives one text, the one earlier versions wrote.
pub fn json_text(value: &serde_json::Value) -> String {
    fn write(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<(&String, &serde_json::Value)> = map.iter().collect();
                keys.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (key, value)) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(key.clone()).to_string());
                    out.push(':');
                    write(value, out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_sorts_keys_at_every_depth_whatever_their_order() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"d":2,"c":"\u00e9"}],"x":null}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[{"c":"é","d":2}]},"b":1}"#).unwrap();
        assert_eq!(
            json_text(&a),
            r#"{"a":{"x":null,"y":[{"c":"é","d":2}]},"b":1}"#
        );
        assert_eq!(json_text(&a), json_text(&b));
    }
}
