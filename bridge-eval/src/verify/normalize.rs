//! String-level normalisation of an extracted answer, before tokenising:
//! math delimiters and `\boxed{}` unwrapped, `\text{…}` units dropped,
//! currency, degrees, thousands separators and trailing unit words removed,
//! mixed numbers rewritten as sums. Every pass is linear in the input.

/// Finds the `}` matching the `{` at byte `open` (iterative, so any depth is fine).
pub(crate) fn matching_brace(s: &str, open: usize) -> Option<usize> {
    let b = s.as_bytes();
    if b.get(open) != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                // Skip escaped braces `\{` `\}`.
                i += 2;
                continue;
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

const TEXT_WRAPPERS: &[&str] =
    &["\\textnormal", "\\textbf", "\\textit", "\\textrm", "\\textsf", "\\texttt", "\\text", "\\mbox", "\\hbox"];
const MATH_WRAPPERS: &[&str] =
    &["\\operatorname", "\\mathrm", "\\mathbf", "\\mathit", "\\mathsf", "\\boldsymbol", "\\mathnormal"];

/// Names that are mathematics, never units or text words.
pub(crate) const MATH_WORDS: &[&str] = &[
    "sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "ln", "log", "exp", "pi", "arcsin", "arccos", "arctan", "sinh",
    "cosh", "tanh", "infty", "inf", "frac", "dfrac", "tfrac", "cdot", "times", "div", "pm", "mp", "cup", "cap", "le",
    "ge", "leq", "geq", "neq", "ne", "in", "binom", "left", "right", "mod", "max", "min", "gcd", "lcm", "abs",
];

const SINGLE_LETTER_UNITS: &[&str] = &["m", "g", "s", "h", "l", "L", "K", "N", "J", "W", "V"];
const GLUED_UNITS: &[&str] = &[
    "cm", "mm", "km", "m", "kg", "g", "mg", "lb", "lbs", "oz", "ft", "s", "sec", "min", "mins", "h", "hr", "hrs", "ml",
    "mL", "l", "L", "mph", "kmh", "cm2", "m2", "km2", "cm3", "m3", "kph",
];

/// Result of normalisation: the string to tokenise.
pub(crate) fn normalize(input: &str) -> String {
    let mut s = replace_unicode(input.trim());
    s = unwrap_delimiters(&s);
    s = strip_text_wrappers(&s);
    s = unwrap_delimiters(&s);
    s = strip_misc(&s);
    s = strip_in_prefix(&s);
    s = strip_units(&s);
    s = strip_thousands(&s);
    s = mixed_number(&s);
    s.trim().to_string()
}

fn replace_unicode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{2212}' | '\u{2013}' | '\u{2014}' => out.push('-'),
            '\u{00d7}' => out.push_str("\\times "),
            '\u{00b7}' | '\u{22c5}' => out.push_str("\\cdot "),
            '\u{00f7}' => out.push_str("\\div "),
            '\u{03c0}' => out.push_str("\\pi "),
            '\u{221e}' => out.push_str("\\infty "),
            '\u{221a}' => out.push_str("\\sqrt"),
            '\u{2264}' => out.push_str("\\le "),
            '\u{2265}' => out.push_str("\\ge "),
            '\u{222a}' => out.push_str("\\cup "),
            '\u{2208}' => out.push_str("\\in "),
            '\u{00b0}' => {}
            '\u{00b2}' => out.push_str("^2"),
            '\u{00b3}' => out.push_str("^3"),
            '\u{20ac}' | '\u{00a3}' | '\u{00a2}' => {}
            '\u{00a0}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Strips `$…$`, `$$…$$`, `\(…\)`, `\[…\]`, `\boxed{…}`, `\fbox{…}` wrapping the whole string.
fn unwrap_delimiters(s: &str) -> String {
    let mut cur = s.trim();
    for _ in 0..16 {
        let before = cur;
        if cur.len() >= 4 && cur.starts_with("$$") && cur.ends_with("$$") {
            cur = cur[2..cur.len() - 2].trim();
        } else if cur.len() >= 2 && cur.starts_with('$') && cur.ends_with('$') && !cur.ends_with("\\$") {
            cur = cur[1..cur.len() - 1].trim();
        } else if cur.len() >= 4
            && ((cur.starts_with("\\(") && cur.ends_with("\\)")) || (cur.starts_with("\\[") && cur.ends_with("\\]")))
        {
            cur = cur[2..cur.len() - 2].trim();
        } else {
            for cmd in ["\\boxed", "\\fbox"] {
                if let Some(rest) = cur.strip_prefix(cmd) {
                    let off = cur.len() - rest.len();
                    let rest_trim = rest.trim_start();
                    let open = off + (rest.len() - rest_trim.len());
                    if let Some(close) = matching_brace(cur, open)
                        && close + 1 == cur.len()
                    {
                        cur = cur[open + 1..close].trim();
                        break;
                    }
                }
            }
        }
        if cur.len() == before.len() {
            break;
        }
    }
    cur.to_string()
}

fn is_unit_like(content: &str) -> bool {
    let c = content.trim();
    !c.is_empty()
        && c.chars().any(|ch| ch.is_ascii_alphabetic())
        && c.chars().all(|ch| ch.is_ascii_alphabetic() || matches!(ch, ' ' | '.' | '/' | '^' | '2' | '3' | '-' | '\''))
}

/// Handles `\text{…}`-like wrappers: dropped when they hold a unit after something
/// else, unwrapped otherwise (`\text{(B)}` → `(B)`, `\text{yes}` → `yes`).
fn strip_text_wrappers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let b = s.as_bytes();
    'outer: while i < s.len() {
        if b[i] == b'\\' {
            for (list, is_text) in [(TEXT_WRAPPERS, true), (MATH_WRAPPERS, false)] {
                for w in list {
                    if s[i..].starts_with(w) {
                        let after = i + w.len();
                        // Must not continue as a longer command name.
                        if b.get(after).is_some_and(|c| c.is_ascii_alphabetic()) {
                            continue;
                        }
                        let mut open = after;
                        while b.get(open) == Some(&b' ') {
                            open += 1;
                        }
                        let Some(close) = matching_brace(s, open) else {
                            continue;
                        };
                        let content = &s[open + 1..close];
                        let trimmed = content.trim();
                        let before_nonempty = !out.trim().is_empty();
                        let lower = trimmed.to_ascii_lowercase();
                        if before_nonempty && (lower == "or" || lower == "and") {
                            out.push(',');
                        } else if before_nonempty
                            && is_unit_like(trimmed)
                            && (is_text || trimmed.len() >= 2)
                            && !MATH_WORDS.contains(&trimmed)
                        {
                            // A unit: drop it, with a following `^2`/`^{3}`.
                            let rest = &s[close + 1..];
                            let skip = ["^{2}", "^{3}", "^2", "^3"]
                                .iter()
                                .find(|p| rest.starts_with(**p))
                                .map_or(0, |p| p.len());
                            i = close + 1 + skip;
                            continue 'outer;
                        } else {
                            out.push(' ');
                            out.push_str(trimmed);
                            out.push(' ');
                        }
                        i = close + 1;
                        continue 'outer;
                    }
                }
            }
        }
        // Push one char (keep UTF-8 boundaries).
        let ch_len = s[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&s[i..i + ch_len]);
        i += ch_len;
    }
    out
}

fn strip_misc(s: &str) -> String {
    let mut t = s.to_string();
    for pat in ["\\,", "\\!", "\\;", "\\:"] {
        t = t.replace(pat, "");
    }
    t = t.replace("\\ ", " ");
    for pat in ["^{\\circ}", "^\\circ", "^{\\degree}", "\\degree", "\\circ"] {
        t = t.replace(pat, "");
    }
    t = t.replace("\\%", "%");
    t = t.replace("\\$", "");
    t = t.replace('$', "");
    t = t.replace("{,}", ",");
    t = t.replace("\\dfrac", "\\frac");
    t = t.replace("\\tfrac", "\\frac");
    t = t.replace("\\cfrac", "\\frac");
    let trimmed = t.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed).trim_end();
    let trimmed = trimmed.strip_suffix("\\\\").unwrap_or(trimmed);
    let lower = trimmed.to_ascii_lowercase();
    for w in [" percent", "percent"] {
        if lower.ends_with(w) && trimmed.len() > w.len() {
            return format!("{}%", &trimmed[..trimmed.len() - w.len()]);
        }
    }
    for w in [" degrees", " degree", " dollars", " dollar", " cents"] {
        if lower.ends_with(w) && trimmed.len() > w.len() {
            return trimmed[..trimmed.len() - w.len()].to_string();
        }
    }
    trimmed.to_string()
}

/// `x \in [0,1]` → `[0,1]`.
fn strip_in_prefix(s: &str) -> String {
    if let Some(pos) = s.find("\\in") {
        let head = s[..pos].trim();
        let after = s[pos + 3..].chars().next();
        if !head.is_empty()
            && head.len() <= 12
            && head.chars().all(|c| c.is_ascii_alphabetic() || c == '\\' || c == ' ')
            && !after.is_some_and(|c| c.is_ascii_alphabetic())
        {
            return s[pos + 3..].trim().to_string();
        }
    }
    s.to_string()
}

fn ends_numberish(s: &str) -> bool {
    s.trim_end().chars().last().is_some_and(|c| c.is_ascii_digit() || matches!(c, '}' | ')' | '%' | '.'))
}

fn is_unit_word(w: &str) -> bool {
    let base = w.trim_end_matches(['2', '3']).trim_end_matches('^').trim_end_matches(['.', ',']);
    if base.is_empty() || MATH_WORDS.contains(&base) {
        return false;
    }
    if !base.chars().all(|c| c.is_ascii_alphabetic() || c == '/' || c == '-' || c == '\'')
        || !base.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
    {
        return false;
    }
    base.len() >= 2 || SINGLE_LETTER_UNITS.contains(&base)
}

/// Drops trailing unit words after a number: `12 apples` → `12`, `5cm` → `5`.
fn strip_units(s: &str) -> String {
    let mut cur = s.trim_end();
    for _ in 0..8 {
        let Some(sp) = cur.rfind(' ') else { break };
        let word = &cur[sp + 1..];
        let head = cur[..sp].trim_end();
        if !head.is_empty() && is_unit_word(word) && head.chars().any(|c| c.is_ascii_digit()) {
            // Only strip when what remains still ends like a number, or more words follow.
            if ends_numberish(head) || head.rsplit(' ').next().is_some_and(is_unit_word) {
                cur = head;
                continue;
            }
        }
        break;
    }
    // Glued unit: digits immediately followed by a known unit.
    let letters_start =
        cur.char_indices().rev().take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '/').last().map(|(i, _)| i);
    if let Some(start) = letters_start {
        let tail = &cur[start..];
        let digit_end = tail.char_indices().find(|(_, c)| !c.is_ascii_digit() && *c != '.').map(|(i, _)| i);
        if let Some(de) = digit_end
            && de > 0
        {
            let unit = &tail[de..];
            let unit_base = unit.split('/').next().unwrap_or(unit);
            if GLUED_UNITS.contains(&unit_base) && unit.len() >= 2 {
                cur = &cur[..start + de];
            }
        }
    }
    cur.to_string()
}

/// `1,234,567.5` → `1234567.5` when the whole answer is such a number.
fn strip_thousands(s: &str) -> String {
    let t = s.trim();
    let body = t.strip_prefix('-').unwrap_or(t);
    let body = body.strip_suffix('%').unwrap_or(body);
    let int_part = body.split('.').next().unwrap_or(body);
    let frac_ok = body.split_once('.').is_none_or(|(_, f)| f.chars().all(|c| c.is_ascii_digit()));
    for sep in [',', ' '] {
        if !int_part.contains(sep) || !frac_ok {
            continue;
        }
        let groups: Vec<&str> = int_part.split(sep).collect();
        let ok = groups.first().is_some_and(|g| (1..=3).contains(&g.len()) && g.chars().all(|c| c.is_ascii_digit()))
            && groups.iter().skip(1).all(|g| g.len() == 3 && g.chars().all(|c| c.is_ascii_digit()));
        if ok {
            return t.replace(sep, "");
        }
    }
    t.to_string()
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

/// `2 1/2` and `2\frac{1}{2}` → `(2+1/2)`; with a leading `-`, the whole is negated.
fn mixed_number(s: &str) -> String {
    let t = s.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b.trim_start()),
        None => (false, t),
    };
    let wrap = |w: &str, n: &str, d: &str| format!("{}({}+{}/{})", if neg { "-" } else { "" }, w, n, d);
    if let Some((w, frac)) = body.split_once(' ')
        && all_digits(w)
        && let Some((n, d)) = frac.trim().split_once('/')
        && all_digits(n)
        && all_digits(d)
    {
        return wrap(w, n, d);
    }
    if let Some(pos) = body.find("\\frac") {
        let w = body[..pos].trim();
        let rest = &body[pos + 5..];
        if all_digits(w)
            && let Some(rest) = rest.strip_prefix('{')
            && let Some((n, rest)) = rest.split_once('}')
            && let Some(rest) = rest.strip_prefix('{')
            && let Some((d, rest)) = rest.split_once('}')
            && rest.trim().is_empty()
            && all_digits(n)
            && all_digits(d)
        {
            return wrap(w, n, d);
        }
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalises_common_decorations() {
        assert_eq!(normalize("$\\boxed{5}$"), "5");
        assert_eq!(normalize("\\$1,234.50"), "1234.50");
        assert_eq!(normalize("12 apples"), "12");
        assert_eq!(normalize("5\\text{ cm}"), "5");
        assert_eq!(normalize("5cm"), "5");
        assert_eq!(normalize("90^\\circ"), "90");
        assert_eq!(normalize("\\text{(B)}"), "(B)");
        assert_eq!(normalize("2\\frac{1}{2}"), "(2+1/2)");
        assert_eq!(normalize("-3 1/4"), "-(3+1/4)");
        assert_eq!(normalize("x \\in [0,1]"), "[0,1]");
        assert_eq!(normalize("50\\%"), "50%");
        assert_eq!(normalize("1{,}000"), "1000");
        assert_eq!(normalize("(1,2)"), "(1,2)");
    }
}
