//! Elasticsearch's `_bulk` body, so that any agent with an Elasticsearch output ships here unchanged: NDJSON
//! pairs of an action line (`{"index":{…}}` or `{"create":{…}}`) and a document line. The documents become the
//! events, in order; `delete` (no document line) and `update` (a partial document) actions change stored events,
//! which the collector never does, and are answered per item as refused.

use serde_json::value::RawValue;

use super::{json_error, DecodeError};

/// One action of the body, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `index` or `create`: the document is event `event` of the batch.
    Doc {
        action: String,
        index: String,
        event: usize,
    },
    /// An action that would change stored events.
    Refused { action: String, index: String },
}

/// The documents as a JSON array of events, and every action in order.
pub fn to_json_array(text: &str) -> Result<(String, Vec<Item>), DecodeError> {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('[');
    let mut items = Vec::new();
    let mut events = 0usize;
    let mut lines = numbered_lines(text);
    while let Some((offset, line)) = lines.next() {
        let (action, index) = action(text, offset, line)?;
        match action.as_str() {
            "index" | "create" => {
                let Some((doc_offset, doc)) = lines.next() else {
                    return Err(DecodeError::Json {
                        offset: offset + line.len(),
                        line: line_of(text, offset),
                        column: line.len() + 1,
                        detail: format!("`{action}` action without a document line"),
                    });
                };
                serde_json::from_str::<&RawValue>(doc)
                    .map_err(|e| shifted(text, doc_offset, &e))?;
                if events > 0 {
                    out.push(',');
                }
                out.push_str(doc);
                items.push(Item::Doc {
                    action,
                    index,
                    event: events,
                });
                events += 1;
            }
            "update" => {
                // Its partial document follows; it is not an event.
                let _ = lines.next();
                items.push(Item::Refused { action, index });
            }
            _ => items.push(Item::Refused { action, index }),
        }
    }
    if items.is_empty() {
        return Err(DecodeError::Empty);
    }
    out.push(']');
    Ok((out, items))
}

/// Non-blank lines with the byte offset where each starts.
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    text.split('\n').filter_map(move |raw| {
        let start = offset;
        offset += raw.len() + 1;
        let line = raw.trim_end_matches('\r');
        (!line.trim().is_empty()).then_some((start, line))
    })
}

/// The action's name and target index.
fn action(text: &str, offset: usize, line: &str) -> Result<(String, String), DecodeError> {
    let parsed: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_str(line).map_err(|e| shifted(text, offset, &e))?;
    let mut entries = parsed.into_iter();
    match (entries.next(), entries.next()) {
        (Some((action, meta)), None) => {
            let index = meta
                .get("_index")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            Ok((action, index))
        }
        _ => Err(DecodeError::Json {
            offset,
            line: line_of(text, offset),
            column: 1,
            detail:
                "expected an action line with one key (`index`, `create`, `delete` or `update`)"
                    .into(),
        }),
    }
}

/// `e`, raised on the line starting at `offset`, positioned in the whole body.
fn shifted(text: &str, offset: usize, e: &serde_json::Error) -> DecodeError {
    match json_error(&text[offset..], e) {
        DecodeError::Json {
            offset: o,
            column,
            detail,
            ..
        } => DecodeError::Json {
            offset: offset + o,
            line: line_of(text, offset),
            column,
            detail,
        },
        other => other,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_become_events_and_other_actions_are_refused() {
        let body = "{\"index\":{\"_index\":\"net\"}}\n{\"src_ip\":\"10.0.0.1\"}\n\
                    {\"delete\":{\"_index\":\"net\",\"_id\":\"1\"}}\n\
                    {\"update\":{\"_id\":\"2\"}}\n{\"doc\":{\"a\":1}}\n\
                    {\"create\":{}}\r\n{\"dst_port\":443}\n";
        let (array, items) = to_json_array(body).unwrap();
        assert_eq!(array, r#"[{"src_ip":"10.0.0.1"},{"dst_port":443}]"#);
        assert_eq!(items.len(), 4);
        assert!(
            matches!(&items[0], Item::Doc { action, index, event: 0 } if action == "index" && index == "net")
        );
        assert!(matches!(&items[1], Item::Refused { action, .. } if action == "delete"));
        assert!(matches!(&items[2], Item::Refused { action, .. } if action == "update"));
        assert!(matches!(&items[3], Item::Doc { event: 1, .. }));
        let err = to_json_array("{\"index\":{}}\n{\"a\":}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(to_json_array("{\"index\":{}}\n").is_err());
    }
}
