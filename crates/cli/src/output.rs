//! What a command prints: a table for people, the server's JSON for scripts.

use serde_json::Value;

/// A cell as people read it: strings bare, `null` as `-`, lists joined.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Left-aligned columns, two spaces apart, headers in capitals.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_uppercase()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// The rows of `items` for `fields` (JSON paths of one level).
pub fn rows(items: &[Value], fields: &[&str]) -> Vec<Vec<String>> {
    items.iter().map(|item| fields.iter().map(|f| cell(&item[*f])).collect()).collect()
}

/// `key: value` lines for one object, in the order given.
pub fn record(v: &Value, fields: &[&str]) -> String {
    let width = fields.iter().map(|f| f.len()).max().unwrap_or(0);
    fields.iter().map(|f| format!("{f:width$}  {}", cell(&v[*f]))).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_show_nulls_and_lists() {
        let items = vec![
            json!({"id": "a", "domains": ["x.com", "y.com"], "n": 3}),
            json!({"id": "longer-id", "domains": [], "n": null}),
        ];
        let t = table(&["id", "domains", "n"], &rows(&items, &["id", "domains", "n"]));
        assert_eq!(t, "ID         DOMAINS      N\na          x.com,y.com  3\nlonger-id  -            -");
    }

    #[test]
    fn records_are_key_value_lines() {
        assert_eq!(record(&json!({"id": "a", "plan": "pro"}), &["id", "plan"]), "id    a\nplan  pro");
    }
}
