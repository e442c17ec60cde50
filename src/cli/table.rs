//! Column-aligned text output in the style of Go's tabwriter, as the reference `ltx` tool prints.

/// Formats rows so that every column but the last is padded to its widest cell plus two spaces.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < row.len() {
                out.push_str(&" ".repeat(widths[c] - cell.len() + 2));
            }
        }
        out.push('\n');
    }
    out
}

/// `text` with each control character (a newline, an escape that would start a terminal
/// sequence) written as its Rust escape (`\n`, `\u{1b}`), so that a name read from disk can
/// neither break a line of output in two nor drive the terminal.
pub fn escape_control(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::escape_control("a.db"), "a.db");
        assert_eq!(super::escape_control("ü.db"), "ü.db");
        assert_eq!(
            super::escape_control("a\nb: ok\u{1b}[31m.db\t"),
            "a\\nb: ok\\u{1b}[31m.db\\t"
        );
    }

    #[test]
    fn pads_all_but_the_last_column() {
        let rows = vec![
            vec!["a".to_string(), "bb".to_string(), "c".to_string()],
            vec!["aaa".to_string(), "b".to_string(), "cc".to_string()],
        ];
        assert_eq!(super::render(&rows), "a    bb  c\naaa  b   cc\n");
    }
}
