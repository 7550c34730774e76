//! Locating the final answer inside a model completion or a reference solution.

/// Options for [`extract_answer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Only answers that end within the last `tail_chars` characters count (an answer may start
    /// before them: a long boxed number is found whole).
    pub tail_chars: usize,
    /// Fall back to the last number in the text when no anchor is found.
    pub last_number_fallback: bool,
    /// Accept the whole (trimmed) text as the answer when it is at most this many
    /// bytes long and nothing else matched; `0` disables this.
    pub bare_answer_max_len: usize,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions { tail_chars: 4000, last_number_fallback: false, bare_answer_max_len: 0 }
    }
}

/// Which rule found the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtractMethod {
    /// The last `\boxed{…}` or `\fbox{…}`.
    Boxed,
    /// GSM8K's `#### N`.
    Hashes,
    /// After "the answer is", "final answer:", "Answer:".
    Anchor,
    /// The last `$…$`, `$$…$$`, `\(…\)` or `\[…\]`.
    MathSpan,
    /// The last number (only with [`ExtractOptions::last_number_fallback`]).
    LastNumber,
    /// The whole text (only with [`ExtractOptions::bare_answer_max_len`]).
    Whole,
}

/// An answer found in a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    /// The answer as written (inside the box, after the anchor, …).
    pub text: String,
    /// How it was found.
    pub method: ExtractMethod,
}

/// The last `n` characters of `s` (the whole string when shorter).
pub fn tail(s: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    match s.char_indices().rev().nth(n - 1) {
        Some((i, _)) => &s[i..],
        None => s,
    }
}

/// Byte offset of the end of `part`, a slice of `text`.
fn end_in(text: &str, part: &str) -> usize {
    part.as_ptr() as usize - text.as_ptr() as usize + part.len()
}

/// Finds the final answer in `text`: last box, then `####`, then an answer
/// anchor, then the last math span, then (optionally) the last number or the
/// whole short text. Each rule looks at the whole text but only accepts an answer that ends in the
/// last [`ExtractOptions::tail_chars`] characters. `None` when nothing is found. The answer is
/// returned at any length (the verifier reports answers too long to judge).
pub fn extract_answer(text: &str, opts: &ExtractOptions) -> Option<Extracted> {
    let window = text.len() - tail(text, opts.tail_chars).len();
    let ok = |s: &str| !s.trim().is_empty() && end_in(text, s) > window;
    let mk = |s: &str, method| Some(Extracted { text: s.trim().to_string(), method });
    if let Some(s) = last_boxed(text, window)
        && ok(s)
    {
        return mk(s, ExtractMethod::Boxed);
    }
    if let Some(s) = after_hashes(text)
        && ok(s)
    {
        return mk(s, ExtractMethod::Hashes);
    }
    if let Some(s) = after_anchor(text)
        && ok(s)
    {
        return mk(s, ExtractMethod::Anchor);
    }
    if let Some(s) = last_math_span(text)
        && ok(s)
    {
        return mk(s, ExtractMethod::MathSpan);
    }
    if opts.last_number_fallback
        && let Some(s) = last_number(text)
        && ok(s)
    {
        return mk(s, ExtractMethod::LastNumber);
    }
    let whole = text.trim();
    if opts.bare_answer_max_len > 0 && !whole.is_empty() && whole.len() <= opts.bare_answer_max_len {
        return mk(whole, ExtractMethod::Whole);
    }
    None
}

/// Whether `text` carries an explicit final-answer marker (`####` or a box).
pub fn has_answer_marker(text: &str) -> bool {
    text.contains("####") || text.contains("\\boxed") || text.contains("\\fbox")
}

/// Every matched `{…}` pair of `t` as `(open, close)` byte offsets, sorted by `open`, found in
/// one pass (escaped braces `\{` `\}` skipped, as [`super::normalize::matching_brace`] does).
fn brace_pairs(t: &str) -> Vec<(usize, usize)> {
    let b = t.as_bytes();
    let (mut open, mut pairs) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'{' => open.push(i),
            b'}' => {
                if let Some(o) = open.pop() {
                    pairs.push((o, i));
                }
            }
            _ => {}
        }
        i += 1;
    }
    pairs.sort_unstable();
    pairs
}

/// Contents of the last well-formed `\boxed{…}` / `\fbox{…}` (or `\boxed 5`) that ends after
/// byte `window`. Linear in the length of `t`.
fn last_boxed(t: &str, window: usize) -> Option<&str> {
    let mut starts: Vec<usize> = Vec::new();
    for cmd in ["\\boxed", "\\fbox"] {
        starts.extend(t.match_indices(cmd).map(|(i, _)| i + cmd.len()));
    }
    if starts.is_empty() {
        return None;
    }
    starts.sort_unstable();
    let pairs = brace_pairs(t);
    for &after in starts.iter().rev() {
        let rest = &t[after..];
        let trimmed = rest.trim_start();
        let open = after + (rest.len() - trimmed.len());
        let inner = if trimmed.starts_with('{') {
            // Unbalanced: try an earlier box.
            let Ok(k) = pairs.binary_search_by_key(&open, |p| p.0) else { continue };
            &t[open + 1..pairs[k].1]
        } else if rest.starts_with(' ') {
            // `\boxed 5`: up to whitespace or `$`.
            let end = trimmed.find(|c: char| c.is_whitespace() || c == '$').unwrap_or(trimmed.len());
            &trimmed[..end]
        } else {
            continue;
        };
        if end_in(t, inner) > window {
            return Some(inner);
        }
    }
    None
}

/// The rest of the line after the last `####`.
fn after_hashes(t: &str) -> Option<&str> {
    let i = t.rfind("####")?;
    let rest = t[i + 4..].trim_start_matches('#');
    let line = rest.split('\n').next().unwrap_or(rest);
    Some(line.trim())
}

const ANCHORS: &[&str] = &["final answer is", "the answer is", "answer is", "final answer:", "answer:"];

fn after_anchor(t: &str) -> Option<&str> {
    let lower = t.to_ascii_lowercase();
    let mut best: Option<usize> = None;
    for a in ANCHORS {
        if let Some(i) = lower.rfind(a) {
            let end = i + a.len();
            if best.is_none_or(|b| end > b) {
                best = Some(end);
            }
        }
    }
    let rest = t[best?..].trim_start();
    let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
    let rest = rest.strip_prefix("**").unwrap_or(rest).trim_start();
    // A math span right after the anchor.
    for (open, close) in [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")] {
        if let Some(inner) = rest.strip_prefix(open)
            && let Some(j) = inner.find(close)
        {
            return Some(&inner[..j]);
        }
    }
    if let Some(b) = last_boxed(rest, 0) {
        return Some(b);
    }
    let line = rest.split('\n').next().unwrap_or(rest);
    Some(cut_sentence(line).trim_end_matches("**").trim())
}

/// Cuts at the first sentence end: a `.` not between digits, or `;`.
fn cut_sentence(s: &str) -> &str {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'.' {
            let next_digit = b.get(i + 1).is_some_and(u8::is_ascii_digit);
            let prev_digit = i > 0 && b[i - 1].is_ascii_digit();
            if !(next_digit && (prev_digit || i == 0 || b[i - 1] == b' ' || b[i - 1] == b'-')) {
                return &s[..i];
            }
        }
    }
    s
}

fn last_math_span(t: &str) -> Option<&str> {
    let mut best: Option<(usize, &str)> = None;
    fn consider<'a>(best: &mut Option<(usize, &'a str)>, end: usize, inner: &'a str) {
        if best.is_none_or(|(e, _)| end > e) {
            *best = Some((end, inner));
        }
    }
    for (open, close) in [("\\[", "\\]"), ("\\(", "\\)")] {
        if let Some(c) = t.rfind(close)
            && let Some(o) = t[..c].rfind(open)
        {
            consider(&mut best, c + close.len(), &t[o + open.len()..c]);
        }
    }
    // `$`/`$$` spans: pair dollar signs left to right, ignoring `\$`.
    let b = t.as_bytes();
    let mut i = 0;
    let mut open: Option<(usize, usize)> = None; // (content start, delimiter length)
    let mut last: Option<(usize, usize, usize)> = None;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == b'$' {
            let len = if b.get(i + 1) == Some(&b'$') { 2 } else { 1 };
            match open {
                None => open = Some((i + len, len)),
                Some((start, l)) => {
                    last = Some((start, i, i + len.min(l)));
                    open = None;
                }
            }
            i += len;
            continue;
        }
        i += 1;
    }
    if let Some((s, e, end)) = last
        && s <= e
    {
        consider(&mut best, end, &t[s..e]);
    }
    best.map(|(_, s)| s).filter(|s| !s.trim().is_empty())
}

/// The last number such as `-1,234.5` or `3/4`.
fn last_number(t: &str) -> Option<&str> {
    let b = t.as_bytes();
    let mut end = b.len();
    while end > 0 && !b[end - 1].is_ascii_digit() {
        end -= 1;
    }
    if end == 0 {
        return None;
    }
    let mut start = end;
    while start > 0 {
        let c = b[start - 1];
        let inside = c.is_ascii_digit()
            || ((c == b'.' || c == b',' || c == b'/') && start >= 2 && b[start - 2].is_ascii_digit());
        if !inside {
            break;
        }
        start -= 1;
    }
    if start > 0 && b[start - 1] == b'-' {
        start -= 1;
    }
    Some(&t[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(s: &str) -> Option<String> {
        extract_answer(s, &ExtractOptions::default()).map(|e| e.text)
    }

    #[test]
    fn finds_answers() {
        assert_eq!(ex("so \\boxed{1} no wait \\boxed{\\frac{1}{2}}.").as_deref(), Some("\\frac{1}{2}"));
        assert_eq!(ex("blah\n#### 1,234\n").as_deref(), Some("1,234"));
        assert_eq!(ex("Thus the answer is 3.5.").as_deref(), Some("3.5"));
        assert_eq!(ex("The answer is $\\frac{3}{4}$ indeed").as_deref(), Some("\\frac{3}{4}"));
        assert_eq!(ex("we get $x = 2$ and $y=3$").as_deref(), Some("y=3"));
        assert_eq!(ex("Answer: (B)").as_deref(), Some("(B)"));
        assert_eq!(ex("nothing here 12"), None);
        let o = ExtractOptions { last_number_fallback: true, ..ExtractOptions::default() };
        assert_eq!(extract_answer("total is 1,200 apples.", &o).map(|e| e.text).as_deref(), Some("1,200"));
    }

    #[test]
    fn tail_cuts_on_char_boundary() {
        assert_eq!(tail("héllo", 4), "éllo");
        assert_eq!(tail("ab", 10), "ab");
        assert_eq!(tail("ab", 0), "");
    }
}
