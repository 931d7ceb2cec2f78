//! The chart's values as one tree, from which `values.yaml` (with helm-docs `# --` comments),
//! `values.schema.json` and the chart README's table are all written, so the three cannot
//! disagree: a value that is documented is in the schema with the same description, type and
//! default, and the schema admits nothing that is not documented (`additionalProperties: false`).

use serde_json::{Map, Value, json};

/// A value of the chart: a documented leaf, or a documented map of further values.
pub enum Node {
    Leaf { description: String, default: Value, schema: Value },
    Map { description: String, children: Vec<(String, Node)> },
}

pub fn map(description: &str, children: Vec<(&str, Node)>) -> Node {
    Node::Map {
        description: description.to_string(),
        children: children.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

/// A leaf whose schema is given whole (`type` and constraints); the description is added.
pub fn leaf(description: &str, default: Value, schema: Value) -> Node {
    Node::Leaf { description: description.to_string(), default, schema }
}

pub fn boolean(description: &str, default: bool) -> Node {
    leaf(description, json!(default), json!({"type": "boolean"}))
}

pub fn string(description: &str, default: &str) -> Node {
    leaf(description, json!(default), json!({"type": "string"}))
}

pub fn pattern(description: &str, default: &str, pattern: &str) -> Node {
    leaf(description, json!(default), json!({"type": "string", "pattern": pattern}))
}

pub fn one_of(description: &str, default: &str, choices: &[&str]) -> Node {
    leaf(description, json!(default), json!({"type": "string", "enum": choices}))
}

pub fn integer(description: &str, default: i64, minimum: i64, maximum: i64) -> Node {
    leaf(description, json!(default), json!({"type": "integer", "minimum": minimum, "maximum": maximum}))
}

/// An object passed through to Kubernetes as it is (node selectors, annotations, affinity):
/// its inner shape is Kubernetes' to check, so only its type is fixed here.
pub fn object(description: &str, default: Value, values: Value) -> Node {
    leaf(description, default, json!({"type": "object", "additionalProperties": values}))
}

pub fn list(description: &str, default: Value, items: Value) -> Node {
    leaf(description, default, json!({"type": "array", "items": items}))
}

impl Node {
    fn description(&self) -> &str {
        match self {
            Node::Leaf { description, .. } | Node::Map { description, .. } => description,
        }
    }

    /// The JSON Schema of this node: every map closed and every key required (Helm validates
    /// the values after merging them with the defaults, so a required key is always present
    /// unless a user deletes it with `null`).
    pub fn schema(&self) -> Value {
        match self {
            Node::Leaf { description, schema, .. } => {
                let mut s = schema.as_object().cloned().unwrap_or_default();
                s.insert("description".into(), json!(description));
                Value::Object(s)
            }
            Node::Map { description, children } => {
                let mut properties = Map::new();
                for (k, v) in children {
                    properties.insert(k.clone(), v.schema());
                }
                json!({
                    "type": "object",
                    "description": description,
                    "additionalProperties": false,
                    "required": children.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
                    "properties": properties,
                })
            }
        }
    }

    /// The default values as JSON (what `helm show values` would give, without comments).
    pub fn defaults(&self) -> Value {
        match self {
            Node::Leaf { default, .. } => default.clone(),
            Node::Map { children, .. } => {
                Value::Object(children.iter().map(|(k, v)| (k.clone(), v.defaults())).collect())
            }
        }
    }

    /// Writes the children of this map as YAML with a `# --` comment above each key, the form
    /// helm-docs reads. Scalars and inline collections are JSON, which is YAML: no value can be
    /// misread (`on`, `0755`, `1e3`).
    pub fn write_yaml(&self, out: &mut String, indent: usize) {
        let Node::Map { children, .. } = self else { return };
        for (i, (key, node)) in children.iter().enumerate() {
            let pad = " ".repeat(indent);
            if indent == 0 && i > 0 {
                out.push('\n');
            }
            for line in wrap(node.description(), 96usize.saturating_sub(indent)).iter().enumerate() {
                out.push_str(&format!("{pad}# {}{}\n", if line.0 == 0 { "-- " } else { "" }, line.1));
            }
            match node {
                Node::Leaf { default, .. } => {
                    out.push_str(&format!("{pad}{key}: {}\n", inline(default)));
                }
                Node::Map { .. } => {
                    out.push_str(&format!("{pad}{key}:\n"));
                    node.write_yaml(out, indent + 2);
                }
            }
        }
    }

    /// Every leaf as (dotted key, type, default, description), in file order: the README table.
    pub fn rows(&self, prefix: &str, out: &mut Vec<(String, String, String, String)>) {
        let Node::Map { children, .. } = self else { return };
        for (key, node) in children {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match node {
                Node::Leaf { description, default, schema } => {
                    let ty = match schema.get("type") {
                        Some(Value::String(t)) if t == "array" => "list".to_string(),
                        Some(Value::String(t)) => t.clone(),
                        _ => "string".to_string(),
                    };
                    out.push((path, ty, inline(default), description.clone()));
                }
                Node::Map { .. } => node.rows(&path, out),
            }
        }
    }
}

fn inline(v: &Value) -> String {
    serde_json::to_string(v).expect("JSON values serialize")
}

/// Splits a description into comment lines of at most `width` characters (at spaces).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("lines is never empty");
        if !last.is_empty() && last.len() + 1 + word.len() > width.max(40) {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_schema_and_rows_come_from_one_tree() {
        let tree = map(
            "root",
            vec![("a", map("A map", vec![("enabled", boolean("A switch", true))])), ("n", integer("A count", 2, 0, 9))],
        );
        let mut yaml = String::new();
        tree.write_yaml(&mut yaml, 0);
        assert_eq!(yaml, "# -- A map\na:\n  # -- A switch\n  enabled: true\n\n# -- A count\nn: 2\n");
        let schema = tree.schema();
        assert_eq!(schema["properties"]["a"]["additionalProperties"], json!(false));
        assert_eq!(schema["properties"]["n"]["maximum"], json!(9));
        assert_eq!(schema["required"], json!(["a", "n"]));
        let mut rows = Vec::new();
        tree.rows("", &mut rows);
        assert_eq!(rows[0].0, "a.enabled");
        assert_eq!(tree.defaults(), json!({"a": {"enabled": true}, "n": 2}));
    }

    #[test]
    fn long_descriptions_wrap_into_continuation_comments() {
        let lines = wrap(&"word ".repeat(40), 50);
        assert!(lines.len() > 1 && lines.iter().all(|l| l.len() <= 50), "{lines:?}");
    }
}
