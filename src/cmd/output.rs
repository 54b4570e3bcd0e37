//! How the CLI prints events: one readable line each, or JSON.

use eventstreamcore::event::StoredEvent;
use serde_json::{Value, json};

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds, e.g. `2026-12-05T17:21:56.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Bytes as text when they are UTF-8, else as lowercase hex with a `0x` prefix.
fn text_or_hex(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => format!("0x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
    }
}

/// One line per event, as `esc fetch` and `esc tail` print them.
pub fn event_line(s: &StoredEvent) -> String {
    let e = &s.event;
    let mut line = format!(
        "offset={} time={} priority={} producer={} seq={}",
        s.offset,
        rfc3339_ms(s.timestamp_ms),
        e.priority,
        e.producer_id,
        e.sequence
    );
    if let Some(k) = &e.key {
        line += &format!(" key={}", text_or_hex(k));
    }
    for h in &e.headers {
        line += &format!(" header.{}={}", h.name, text_or_hex(&h.value));
    }
    line += &format!(" payload={}", text_or_hex(&e.payload));
    line
}

/// Bytes in JSON: a string if UTF-8, else `{"hex": "..."}`.
fn bytes_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
    }
}

/// An event as a JSON object.
pub fn event_json(s: &StoredEvent) -> Value {
    let e = &s.event;
    let headers: serde_json::Map<String, Value> =
        e.headers.iter().map(|h| (h.name.clone(), bytes_json(&h.value))).collect();
    json!({
        "offset": s.offset,
        "timestamp_ms": s.timestamp_ms,
        "time": rfc3339_ms(s.timestamp_ms),
        "topic": e.topic,
        "priority": e.priority.name(),
        "producer": e.producer_id,
        "seq": e.sequence,
        "key": e.key.as_deref().map(bytes_json),
        "headers": headers,
        "payload": bytes_json(&e.payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(rfc3339_ms(1_796_491_113_755), "2026-12-05T17:18:33.755Z");
        assert_eq!(rfc3339_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn binary_bytes_print_as_hex() {
        assert_eq!(text_or_hex(b"hi"), "hi");
        assert_eq!(text_or_hex(&[0xff, 0]), "0xff00");
        assert_eq!(bytes_json(&[0xff]), json!({"hex": "ff"}));
    }
}
