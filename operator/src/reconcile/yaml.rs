//! YAML text that kubectl reads back as the same values.
//!
//! `serde_yaml` writes YAML 1.2, where `no`, `on` or `y` are plain strings and need no quotes.
//! kubectl (sigs.k8s.io/yaml over go-yaml v2) reads YAML 1.1, where those words are booleans, so
//! an env value `"no"` rendered as `value: no` would come back as `false` and be refused.
//! [`to_yaml`] serializes with `serde_yaml`, then single-quotes every plain key or value that is
//! a YAML 1.1 boolean word. The contents of block scalars (`|`, `>`) are left alone. This module
//! only rewrites text; it never sees a client, the clock or the environment.

use serde::Serialize;

/// Plain scalars that YAML 1.1 resolves to booleans but YAML 1.2 (serde_yaml) leaves as strings.
/// `true`/`false` and their case variants are not listed: serde_yaml already quotes them.
const YAML11_BOOLEANS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// Serializes `value` as YAML that YAML 1.1 and YAML 1.2 parsers read identically.
pub fn to_yaml(value: &impl Serialize) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(value).map(|text| quote_yaml11_booleans(&text))
}

fn needs_quotes(scalar: &str) -> bool {
    YAML11_BOOLEANS.contains(&scalar)
}

fn quoted(scalar: &str) -> String {
    if needs_quotes(scalar) {
        format!("'{scalar}'")
    } else {
        scalar.to_owned()
    }
}

fn opens_block_scalar(value: &str) -> bool {
    value.starts_with('|') || value.starts_with('>')
}

/// Rewrites one line that is not inside a block scalar. Returns the new line and whether it
/// opens a block scalar.
fn rewrite_line(line: &str) -> (String, bool) {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let mut out = String::from(&line[..indent]);
    let mut rest = &line[indent..];
    while let Some(after) = rest.strip_prefix("- ") {
        out.push_str("- ");
        rest = after;
    }
    if let Some((key, value)) = rest.split_once(": ") {
        out.push_str(&quoted(key));
        out.push_str(": ");
        out.push_str(&quoted(value));
        (out, opens_block_scalar(value))
    } else if let Some(key) = rest.strip_suffix(':') {
        out.push_str(&quoted(key));
        out.push(':');
        (out, false)
    } else {
        out.push_str(&quoted(rest));
        (out, false)
    }
}

fn quote_yaml11_booleans(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    // Indentation of the line that opened the block scalar we are in, if any.
    let mut block_parent: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block_parent {
            if line.trim().is_empty() || indent > parent {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            block_parent = None;
        }
        let (rewritten, opens_block) = rewrite_line(line);
        if opens_block {
            block_parent = Some(indent);
        }
        out.push_str(&rewritten);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn yaml11_boolean_words_are_quoted_and_round_trip() {
        let mut labels = BTreeMap::new();
        labels.insert("no", "on");
        labels.insert("plain", "value");
        let value = serde_json::json!({
            "env": [
                {"name": "A", "value": "no"},
                {"name": "B", "value": "Off"},
                {"name": "C", "value": "y"},
                {"name": "D", "value": "true"},
                {"name": "E", "value": "nothing"},
            ],
            "labels": labels,
            "list": ["yes", "maybe"],
            "flag": false,
        });
        let text = to_yaml(&value).unwrap();
        assert!(text.contains("value: 'no'"), "{text}");
        assert!(text.contains("value: 'Off'"), "{text}");
        assert!(text.contains("value: 'y'"), "{text}");
        assert!(text.contains("value: nothing"), "{text}");
        assert!(text.contains("'no': 'on'"), "{text}");
        assert!(text.contains("- 'yes'"), "{text}");
        assert!(text.contains("flag: false"), "{text}");
        let back: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn block_scalars_are_left_alone() {
        let value = serde_json::json!({
            "data": {"rabbitmq.conf": "no\nkey: on\n  y\n", "after": "off"},
        });
        let text = to_yaml(&value).unwrap();
        assert!(text.contains("    no\n    key: on\n      y\n"), "{text}");
        assert!(text.contains("after: 'off'"), "{text}");
        let back: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}
