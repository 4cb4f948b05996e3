//! Turning CSI responses into readable `key: value` lines, or one JSON object
//! per response with `--json`.
//!
//! Responses are first converted into a [`Record`] by hand (no `{:?}` dumps),
//! so the text and JSON views always show the same fields.

use std::collections::HashMap;
use std::fmt::Write as _;

use lab01_identity::csi;
use serde_json::{Map, Value, json};

/// An ordered list of top-level fields. Order matters for humans only; JSON
/// consumers look fields up by name.
#[derive(Debug, Default, Clone)]
pub struct Record {
    fields: Vec<(String, Value)>,
}

impl Record {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field (builder style).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.push(key, value);
        self
    }

    pub fn push(&mut self, key: &str, value: impl Into<Value>) {
        self.fields.push((key.to_string(), value.into()));
    }

    /// Appends fields in the given order.
    pub fn extend(&mut self, fields: Vec<(String, Value)>) {
        self.fields.extend(fields);
    }

    /// Appends every field of an object value (in its key order).
    pub fn extend_object(&mut self, value: Value) {
        if let Value::Object(map) = value {
            self.fields.extend(map);
        }
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.fields.iter().cloned().collect::<Map<_, _>>())
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.fields {
            render(&mut out, 0, key, value, false);
        }
        out
    }
}

/// Where records go: stdout, as text or as JSON lines.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub json: bool,
}

impl Printer {
    pub fn emit(&self, record: &Record) {
        if self.json {
            outln!("{}", record.to_json());
        } else {
            out!("{}", record.to_text());
        }
    }
}

/// Byte counts read better with a unit next to them.
fn is_byte_field(key: &str) -> bool {
    key.ends_with("_bytes")
        || matches!(key, "available_capacity" | "maximum_volume_size" | "minimum_volume_size")
}

fn scalar(key: &str, value: &Value, bytes: bool) -> String {
    match value {
        Value::Null => "(unset)".to_string(),
        Value::String(s) if s.is_empty() => "\"\"".to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) if bytes || is_byte_field(key) => match n.as_i64() {
            Some(b) if b != 0 => format!("{b} ({})", human_bytes(b)),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// YAML-like rendering: nested objects indent, lists use `- `.
fn render(out: &mut String, indent: usize, key: &str, value: &Value, bytes: bool) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if map.is_empty() => {
            let _ = writeln!(out, "{pad}{key}: {{}}");
        }
        Value::Array(items) if items.is_empty() => {
            let _ = writeln!(out, "{pad}{key}: []");
        }
        Value::Object(map) => {
            let _ = writeln!(out, "{pad}{key}:");
            render_map(out, indent + 2, map);
        }
        Value::Array(items) => {
            let _ = writeln!(out, "{pad}{key}:");
            for item in items {
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // First field on the dash line, the rest aligned under it.
                        let mut block = String::new();
                        render_map(&mut block, 0, map);
                        for (i, line) in block.lines().enumerate() {
                            let lead = if i == 0 { "- " } else { "  " };
                            let _ = writeln!(out, "{pad}  {lead}{line}");
                        }
                    }
                    other => {
                        let _ = writeln!(out, "{pad}  - {}", scalar(key, other, false));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{key}: {}", scalar(key, other, bytes));
        }
    }
}

fn render_map(out: &mut String, indent: usize, map: &Map<String, Value>) {
    // VolumeUsage says its unit in a sibling field.
    let bytes = map.get("unit").and_then(Value::as_str) == Some("BYTES");
    for (k, v) in map {
        render(out, indent, k, v, bytes);
    }
}

/// `1073741824` → `1.0 GiB`.
pub fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// A protobuf string map, with sorted keys (serde_json's map is ordered).
pub fn map_json(map: &HashMap<String, String>) -> Value {
    Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

/// Enum name for a raw protobuf value; unknown numbers stay visible.
macro_rules! enum_name {
    ($ty:ty, $value:expr) => {{
        let v: i32 = $value;
        match <$ty>::try_from(v) {
            Ok(e) => e.as_str_name().to_string(),
            Err(_) => format!("UNRECOGNIZED({v})"),
        }
    }};
}

pub fn topology_json(t: &csi::Topology) -> Value {
    map_json(&t.segments)
}

pub fn content_source_json(source: &Option<csi::VolumeContentSource>) -> Value {
    use csi::volume_content_source::Type;
    match source.as_ref().and_then(|s| s.r#type.as_ref()) {
        None => Value::Null,
        Some(Type::Snapshot(s)) => json!({ "snapshot_id": s.snapshot_id }),
        Some(Type::Volume(v)) => json!({ "volume_id": v.volume_id }),
    }
}

/// A volume's fields in reading order (volume id first).
pub fn volume_fields(v: &csi::Volume) -> Vec<(String, Value)> {
    let mut fields = vec![
        ("volume_id".to_string(), Value::from(v.volume_id.clone())),
        ("capacity_bytes".to_string(), Value::from(v.capacity_bytes)),
        ("volume_context".to_string(), map_json(&v.volume_context)),
    ];
    if v.content_source.is_some() {
        fields.push(("content_source".into(), content_source_json(&v.content_source)));
    }
    fields.push((
        "accessible_topology".into(),
        Value::Array(v.accessible_topology.iter().map(topology_json).collect()),
    ));
    fields
}

pub fn volume_json(v: &csi::Volume) -> Value {
    Value::Object(volume_fields(v).into_iter().collect())
}

pub fn condition_json(c: &Option<csi::VolumeCondition>) -> Value {
    match c {
        None => Value::Null,
        Some(c) => json!({ "abnormal": c.abnormal, "message": c.message }),
    }
}

pub fn capability_json(cap: &csi::VolumeCapability) -> Value {
    use csi::volume_capability::AccessType;
    use csi::volume_capability::access_mode::Mode;
    let mode =
        cap.access_mode.as_ref().map(|m| enum_name!(Mode, m.mode)).map(Value::String).unwrap_or(Value::Null);
    let access = match &cap.access_type {
        None => Value::Null,
        Some(AccessType::Block(_)) => json!({ "block": {} }),
        Some(AccessType::Mount(m)) => json!({
            "mount": { "fs_type": m.fs_type, "mount_flags": m.mount_flags }
        }),
    };
    json!({ "access_mode": mode, "access_type": access })
}

pub fn snapshot_json(s: &csi::Snapshot) -> Value {
    let created =
        s.creation_time.as_ref().map(|t| Value::String(rfc3339(t.seconds, t.nanos))).unwrap_or(Value::Null);
    json!({
        "snapshot_id": s.snapshot_id,
        "source_volume_id": s.source_volume_id,
        "size_bytes": s.size_bytes,
        "creation_time": created,
        "ready_to_use": s.ready_to_use,
        "group_snapshot_id": s.group_snapshot_id,
    })
}

pub fn plugin_capability_json(c: &csi::PluginCapability) -> Value {
    use csi::plugin_capability::{Type, service, volume_expansion};
    match &c.r#type {
        Some(Type::Service(s)) => json!({ "service": enum_name!(service::Type, s.r#type) }),
        Some(Type::VolumeExpansion(e)) => {
            json!({ "volume_expansion": enum_name!(volume_expansion::Type, e.r#type) })
        }
        None => Value::Null,
    }
}

pub fn controller_capability_name(c: &csi::ControllerServiceCapability) -> String {
    use csi::controller_service_capability::{Type, rpc};
    match &c.r#type {
        Some(Type::Rpc(r)) => enum_name!(rpc::Type, r.r#type),
        None => "(empty)".to_string(),
    }
}

pub fn node_capability_name(c: &csi::NodeServiceCapability) -> String {
    use csi::node_service_capability::{Type, rpc};
    match &c.r#type {
        Some(Type::Rpc(r)) => enum_name!(rpc::Type, r.r#type),
        None => "(empty)".to_string(),
    }
}

pub fn usage_json(u: &csi::VolumeUsage) -> Value {
    json!({
        "unit": enum_name!(csi::volume_usage::Unit, u.unit),
        "total": u.total,
        "used": u.used,
        "available": u.available,
    })
}

/// A `df`-style table of NodeGetVolumeStats usage.
pub fn df_table(stats: &csi::NodeGetVolumeStatsResponse) -> String {
    use csi::volume_usage::Unit;
    let mut out = String::new();
    let _ = writeln!(out, "{:<8} {:>12} {:>12} {:>12} {:>5}", "Unit", "Size", "Used", "Avail", "Use%");
    for u in &stats.usage {
        let unit = Unit::try_from(u.unit).unwrap_or(Unit::Unknown);
        let fmt = |n: i64| if unit == Unit::Bytes { human_bytes(n) } else { n.to_string() };
        let pct =
            if u.total > 0 { format!("{}%", (u.used * 100 + u.total - 1) / u.total) } else { "-".into() };
        let _ = writeln!(
            out,
            "{:<8} {:>12} {:>12} {:>12} {:>5}",
            unit.as_str_name(),
            fmt(u.total),
            fmt(u.used),
            fmt(u.available),
            pct
        );
    }
    if let Some(c) = &stats.volume_condition {
        let _ =
            writeln!(out, "condition: {} ({})", if c.abnormal { "ABNORMAL" } else { "normal" }, c.message);
    }
    out
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC).
pub fn rfc3339(seconds: i64, nanos: i32) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for any i64 day count we meet.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let frac = if nanos > 0 { format!(".{:03}", nanos / 1_000_000) } else { String::new() };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{frac}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_output_is_key_value_lines() {
        let rec = Record::new()
            .with("name", "lab.csi.example.com")
            .with("capacity_bytes", 1i64 << 30)
            .with("manifest", json!({ "b": "2", "a": "1" }))
            .with("capabilities", json!(["CREATE_DELETE_VOLUME", "GET_CAPACITY"]))
            .with("empty", json!({}));
        assert_eq!(
            rec.to_text(),
            "name: lab.csi.example.com\n\
             capacity_bytes: 1073741824 (1.0 GiB)\n\
             manifest:\n  a: 1\n  b: 2\n\
             capabilities:\n  - CREATE_DELETE_VOLUME\n  - GET_CAPACITY\n\
             empty: {}\n"
        );
    }

    #[test]
    fn lists_of_objects_use_dashes() {
        let rec = Record::new()
            .with("usage", json!([{ "unit": "BYTES", "total": 2048 }, { "unit": "INODES", "total": 2048 }]));
        assert_eq!(
            rec.to_text(),
            "usage:\n  - total: 2048 (2.0 KiB)\n    unit: BYTES\n  - total: 2048\n    unit: INODES\n"
        );
    }

    #[test]
    fn json_output_has_all_fields() {
        let rec = Record::new().with("volume_id", "v1").with("ready", Value::Null);
        assert_eq!(rec.to_json(), json!({ "volume_id": "v1", "ready": null }));
    }

    #[test]
    fn human_readable_bytes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000, 250_000_000), "2023-11-14T22:13:20.250Z");
    }

    #[test]
    fn df_table_shows_percentages() {
        let stats = csi::NodeGetVolumeStatsResponse {
            usage: vec![csi::VolumeUsage {
                available: 75 << 20,
                total: 100 << 20,
                used: 25 << 20,
                unit: csi::volume_usage::Unit::Bytes as i32,
            }],
            volume_condition: None,
        };
        let table = df_table(&stats);
        assert!(table.contains("100.0 MiB"), "{table}");
        assert!(table.contains("25%"), "{table}");
    }
}
