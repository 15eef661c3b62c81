//! The AWS SDK's `AttributeValue` ⇄ DynamoDB JSON: a scanned item is written as the
//! export's item form (so a scan and an export decode alike), and DynamoDB JSON (a scan's
//! saved `LastEvaluatedKey`, a seed file's items) becomes SDK values.
//!
//! Input: SDK items, or `serde_json` values of DynamoDB JSON. Output: the other.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use serde_json::Value;

use super::plain::{write_json_string, write_tagged, write_tagged_list};

/// One item as the SDK holds it.
pub type SdkItem = HashMap<String, AttributeValue>;

/// DynamoDB JSON (`{"S": "x"}` …) → an SDK value.
///
/// # Errors
/// A value that is not DynamoDB JSON, naming what was found.
pub fn to_attribute_value(v: &Value) -> Result<AttributeValue, String> {
    let obj = v
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| format!("not a DynamoDB JSON value (one type tag): {v}"))?;
    let (tag, inner) = obj.iter().next().ok_or("empty value")?;
    let text = |x: &Value| {
        x.as_str()
            .map(str::to_string)
            .ok_or(format!("{tag} needs a string"))
    };
    let list = |x: &Value| -> Result<Vec<String>, String> {
        x.as_array()
            .ok_or(format!("{tag} needs an array"))?
            .iter()
            .map(|e| {
                e.as_str()
                    .map(str::to_string)
                    .ok_or(format!("{tag} needs strings"))
            })
            .collect()
    };
    let blob = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(aws_sdk_dynamodb::primitives::Blob::new)
            .map_err(|e| format!("B is not base64: {e}"))
    };
    Ok(match tag.as_str() {
        "S" => AttributeValue::S(text(inner)?),
        "N" => AttributeValue::N(match inner {
            Value::Number(n) => n.to_string(),
            other => text(other)?,
        }),
        "B" => AttributeValue::B(blob(&text(inner)?)?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or("BOOL needs true or false")?),
        "NULL" => AttributeValue::Null(true),
        "M" => AttributeValue::M(to_item(inner)?),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .ok_or("L needs an array")?
                .iter()
                .map(to_attribute_value)
                .collect::<Result<_, _>>()?,
        ),
        "SS" => AttributeValue::Ss(list(inner)?),
        "NS" => AttributeValue::Ns(list(inner)?),
        "BS" => AttributeValue::Bs(
            list(inner)?
                .iter()
                .map(|s| blob(s))
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("unknown DynamoDB type tag `{other}`")),
    })
}

/// A DynamoDB JSON map → an SDK item.
///
/// # Errors
/// As [`to_attribute_value`], naming the attribute.
pub fn to_item(v: &Value) -> Result<SdkItem, String> {
    let obj = v.as_object().ok_or("an item must be a JSON object")?;
    obj.iter()
        .map(|(k, v)| {
            to_attribute_value(v)
                .map(|av| (k.clone(), av))
                .map_err(|e| format!("attribute `{k}`: {e}"))
        })
        .collect()
}

/// Appends an SDK item as DynamoDB JSON (the export's item form).
pub fn write_item(out: &mut String, item: &SdkItem) {
    out.push('{');
    for (i, (k, v)) in item.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, k);
        out.push(':');
        write_value(out, v);
    }
    out.push('}');
}

/// Appends one SDK value as DynamoDB JSON. A type this SDK does not know is written with
/// its own tag, which the decoder rejects naming the attribute.
pub fn write_value(out: &mut String, v: &AttributeValue) {
    let b64 = |b: &aws_sdk_dynamodb::primitives::Blob| {
        base64::engine::general_purpose::STANDARD.encode(b.as_ref())
    };
    match v {
        AttributeValue::S(s) => write_tagged(out, "S", s),
        AttributeValue::N(n) => write_tagged(out, "N", n),
        AttributeValue::B(b) => write_tagged(out, "B", &b64(b)),
        AttributeValue::Bool(b) => out.push_str(if *b {
            "{\"BOOL\":true}"
        } else {
            "{\"BOOL\":false}"
        }),
        AttributeValue::Null(_) => out.push_str("{\"NULL\":true}"),
        AttributeValue::M(m) => {
            out.push_str("{\"M\":");
            write_item(out, m);
            out.push('}');
        }
        AttributeValue::L(l) => write_tagged_list(out, "L", l, write_value),
        AttributeValue::Ss(s) => write_tagged_list(out, "SS", s, |o, e| write_json_string(o, e)),
        AttributeValue::Ns(s) => write_tagged_list(out, "NS", s, |o, e| write_json_string(o, e)),
        AttributeValue::Bs(s) => {
            write_tagged_list(out, "BS", s, |o, e| write_json_string(o, &b64(e)))
        }
        _ => out.push_str("{\"UNKNOWN\":null}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::primitives::Blob;

    #[test]
    fn sdk_values_become_the_export_form() {
        let mut m = HashMap::new();
        m.insert("n".to_string(), AttributeValue::N("1.50".into()));
        let item = HashMap::from([
            ("s".to_string(), AttributeValue::S("a\"b\n".into())),
            ("m".to_string(), AttributeValue::M(m)),
            (
                "b".to_string(),
                AttributeValue::B(Blob::new(vec![0u8, 255])),
            ),
            (
                "l".to_string(),
                AttributeValue::L(vec![
                    AttributeValue::Null(true),
                    AttributeValue::Bool(false),
                ]),
            ),
            (
                "ns".to_string(),
                AttributeValue::Ns(vec!["1".into(), "2e3".into()]),
            ),
        ]);
        let mut out = String::new();
        write_item(&mut out, &item);
        let parsed: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(parsed["s"]["S"], "a\"b\n");
        assert_eq!(parsed["m"]["M"]["n"]["N"], "1.50");
        assert_eq!(parsed["b"]["B"], "AP8=");
        assert_eq!(parsed["l"]["L"][0]["NULL"], true);
        assert_eq!(parsed["l"]["L"][1]["BOOL"], false);
        assert_eq!(parsed["ns"]["NS"][1], "2e3");
    }

    #[test]
    fn ddb_json_to_sdk_values_and_back() {
        let v: Value = serde_json::from_str(
            r#"{"a":{"S":"x"},"n":{"N":"123456789012345678901234567890.5"},"m":{"M":{"l":{"L":[{"NULL":true},{"BOOL":true},{"B":"AP8="}]}}},"ss":{"SS":["p","q"]}}"#,
        )
        .expect("json");
        let item = to_item(&v).expect("item");
        assert_eq!(
            item.get("n"),
            Some(&AttributeValue::N(
                "123456789012345678901234567890.5".into()
            ))
        );
        let mut back = String::new();
        write_item(&mut back, &item);
        let again: Value = serde_json::from_str(&back).expect("json");
        assert_eq!(again, v);
        assert!(to_item(&serde_json::json!({"x": {"Q": "1"}}))
            .expect_err("unknown tag")
            .contains("`x`"));
    }
}
