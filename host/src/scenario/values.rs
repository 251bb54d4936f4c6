//! Values in scenario files. A database value is written as TOML: an
//! integer, a float, a boolean or a string (text), or a one-key table for
//! the rest: `{ decimal = "20.000000" }`, `{ timestamp = "2026-11-23T09:00:00Z" }`,
//! `{ bytes = "deadbeef" }` (hex), `{ null = true }`; an array parameter
//! is a TOML array of these (`[1, 2, { null = true }]`).

use crate::bindings::Value;

pub fn from_toml(value: &toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(f) => Value::Float(*f),
        toml::Value::Boolean(b) => Value::Boolean(*b),
        toml::Value::String(s) => Value::Text(s.clone()),
        toml::Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| {
                    from_toml(item)?
                        .to_element()
                        .ok_or_else(|| format!("{value}: arrays do not nest"))
                })
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) if t.len() == 1 => {
            let (kind, inner) = t.iter().next().ok_or("empty table")?;
            match (kind.as_str(), inner) {
                ("decimal", toml::Value::String(s)) => Value::Decimal(s.clone()),
                ("timestamp", toml::Value::String(s)) => Value::Timestamp(s.clone()),
                ("bytes", toml::Value::String(s)) => {
                    Value::Bytes(hex::decode(s).map_err(|e| format!("bytes {s:?}: {e}"))?)
                }
                ("null", _) => Value::Null,
                _ => {
                    return Err(format!(
                        "`{kind}` is not a value kind; use decimal, timestamp, bytes or null"
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "{other} is not a database value; write a number, a boolean, a string, or {{ decimal = \"…\" }}, {{ timestamp = \"…\" }}, {{ bytes = \"hex\" }}, {{ null = true }}, or an array of these"
            ));
        }
    })
}

pub fn to_toml(value: &Value) -> toml::Value {
    let tagged = |kind: &str, v: toml::Value| {
        let mut t = toml::Table::new();
        t.insert(kind.to_owned(), v);
        toml::Value::Table(t)
    };
    match value {
        Value::Null => tagged("null", toml::Value::Boolean(true)),
        Value::Boolean(b) => toml::Value::Boolean(*b),
        Value::Int(i) => toml::Value::Integer(*i),
        Value::Float(f) => toml::Value::Float(*f),
        Value::Text(s) => toml::Value::String(s.clone()),
        Value::Bytes(b) => tagged("bytes", toml::Value::String(hex::encode(b))),
        Value::Decimal(s) => tagged("decimal", toml::Value::String(s.clone())),
        Value::Timestamp(s) => tagged("timestamp", toml::Value::String(s.clone())),
        Value::Array(elements) => {
            toml::Value::Array(elements.iter().map(|e| to_toml(&Value::from(e))).collect())
        }
    }
}

/// JSON (from the journal) as TOML. TOML has no null: a JSON null becomes
/// `{ null = true }`.
pub fn json_to_toml(json: &serde_json::Value) -> toml::Value {
    match json {
        serde_json::Value::Null => {
            let mut t = toml::Table::new();
            t.insert("null".into(), toml::Value::Boolean(true));
            toml::Value::Table(t)
        }
        serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => toml::Value::String(s.clone()),
        serde_json::Value::Array(a) => toml::Value::Array(a.iter().map(json_to_toml).collect()),
        serde_json::Value::Object(o) => toml::Value::Table(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_toml(v)))
                .collect(),
        ),
    }
}

/// TOML (from a scenario) as JSON; `{ null = true }` is JSON null.
pub fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::json!(i),
        toml::Value::Float(f) => serde_json::json!(f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t)
            if t.len() == 1 && t.get("null") == Some(&toml::Value::Boolean(true)) =>
        {
            serde_json::Value::Null
        }
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Element;

    #[test]
    fn every_value_kind_round_trips() {
        for value in [
            Value::Null,
            Value::Boolean(true),
            Value::Int(-7),
            Value::Float(1.5),
            Value::Text("held".into()),
            Value::Bytes(vec![0xde, 0xad]),
            Value::Decimal("20.000000".into()),
            Value::Timestamp("2026-11-23T09:00:00Z".into()),
            Value::Array(vec![]),
            Value::Array(vec![
                Element::Int(1),
                Element::Null,
                Element::Decimal("2.50".into()),
            ]),
        ] {
            assert_eq!(from_toml(&to_toml(&value)).unwrap(), value);
        }
        let date = toml::from_str::<toml::Table>("a = 1979-05-27T07:32:00Z").unwrap()["a"].clone();
        let err = from_toml(&date).unwrap_err();
        assert!(err.contains("decimal"), "{err}");
        let nested: toml::Value =
            toml::from_str::<toml::Table>("a = [[1], 2]").unwrap()["a"].clone();
        let err = from_toml(&nested).unwrap_err();
        assert!(err.contains("arrays do not nest"), "{err}");
    }

    #[test]
    fn json_and_toml_agree_null_included() {
        let json = serde_json::json!({ "a": [1, 2.5, "x", null, true], "b": { "c": null } });
        assert_eq!(toml_to_json(&json_to_toml(&json)), json);
    }
}
