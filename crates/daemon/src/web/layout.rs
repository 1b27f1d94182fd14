//! The page's frame (head, navigation, CSRF token for the forms), badges,
//! and how untrusted text is shown: `maud` escapes every interpolation
//! (`<`, `>`, `&`, `"`, `'`); [`shown`] also makes control characters and
//! the bidirectional overrides that could disguise a name visible.

use super::guard::Auth;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

/// Text an agent controls (paths, commands, output), made visible: C0 and
/// C1 control characters but newline and tab become their Unicode
/// pictures or `\u{..}`, as do the bidirectional controls
/// (U+202A..U+202E, U+2066..U+2069, U+200E, U+200F, U+061C).
pub fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch as u32 {
            0x0a | 0x09 => out.push(ch),
            c @ 0x00..=0x1f => out.push(char::from_u32(0x2400 + c).unwrap_or('?')),
            0x7f => out.push('\u{2421}'),
            c @ (0x80..=0x9f | 0x202a..=0x202e | 0x2066..=0x2069 | 0x200e | 0x200f | 0x061c) => {
                out.push_str(&format!("\\u{{{c:x}}}"))
            }
            _ => out.push(ch),
        }
    }
    out
}

/// One line of it (a path or a command in a table cell): newlines shown too.
pub fn shown_line(s: &str) -> String {
    shown(s).replace('\n', "\u{2424}").replace('\t', "\u{2409}")
}

/// A page's answer: HTML, never cached.
pub fn html_response(status: StatusCode, body: Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body.into_string()).into_response()
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · cloche" }
            link rel="stylesheet" href="/static/app.css";
            script src="/static/app.js" defer {}
        }
    }
}

/// A page without a session (login, errors).
pub fn bare(title: &str, main: Markup) -> Response {
    html_response(StatusCode::OK, html! { (DOCTYPE) html lang="en" { (head(title)) body { main { (main) } } } })
}

/// An error page with `status`.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    html_response(
        status,
        html! { (DOCTYPE) html lang="en" { (head("Refused")) body { main {
            h1 { "HTTP " (status.as_u16()) }
            p.error role="alert" { (shown(message)) }
            p { a href="/" { "Back to the batches" } }
        } } } },
    )
}

/// A page of a logged-in caller: navigation, who it is, and the CSRF token
/// (`<meta name="csrf">` for the script, and in every form).
pub fn page(auth: &Auth, title: &str, main: Markup) -> Response {
    page_status(auth, StatusCode::OK, title, main)
}

pub fn page_status(auth: &Auth, status: StatusCode, title: &str, main: Markup) -> Response {
    let c = &auth.caller;
    html_response(
        status,
        html! { (DOCTYPE) html lang="en" {
            (head(title))
            body {
                header {
                    nav aria-label="main" {
                        a href="/" { "Batches" } " "
                        a href="/worlds" { "Worlds" } " "
                        a href="/policy" { "Policy" } " "
                        a href="/audit" { "Audit" } " "
                        a href="/history" { "History" }
                    }
                    span.who { "uid " (c.uid) " · " (c.roles.names().join(", ")) }
                    form.inline method="post" action="/logout" {
                        (csrf(auth))
                        button type="submit" { "Log out" }
                    }
                }
                main { (main) }
            }
        } },
    )
}

/// The hidden CSRF field of a form.
pub fn csrf(auth: &Auth) -> Markup {
    html! { input type="hidden" name="csrf" value=(auth.session.csrf); }
}

/// A decision's badge: allow, review or deny.
pub fn badge(effect: &str) -> Markup {
    let class = match effect {
        "allow" | "review" | "deny" => effect,
        _ => "other",
    };
    html! { span class={"badge " (class)} { (effect) } }
}

/// A batch state's badge.
pub fn state_badge(state: &str) -> Markup {
    html! { span class={"state s-" (state.chars().filter(char::is_ascii_alphabetic).collect::<String>())} { (state) } }
}

/// How long ago an RFC 3339 time was (`3 min`, `2 h`), or the time itself.
pub fn age(rfc3339: &str) -> String {
    let Some(t) = parse_time(rfc3339) else { return rfc3339.to_string() };
    let now = super::tokens::now_ms() / 1000;
    span_text(now.saturating_sub(t))
}

/// How long until an RFC 3339 time (`in 4 min`, `expired`).
pub fn until(rfc3339: &str) -> String {
    let Some(t) = parse_time(rfc3339) else { return rfc3339.to_string() };
    let now = super::tokens::now_ms() / 1000;
    match t > now {
        true => format!("in {}", span_text(t - now)),
        false => "expired".into(),
    }
}

fn span_text(s: u64) -> String {
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS...Z` (UTC, as the broker writes).
fn parse_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d, hh, mm, ss) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the epoch (UTC).
pub fn rfc3339(secs: u64) -> String {
    cloche_trace::time::rfc3339_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_is_escaped_and_made_visible() {
        let hostile = "<img src=x onerror=alert(1)></script>\x1b[31mred\u{202e}gpj.exe\r";
        let page = html! { p { (shown(hostile)) } }.into_string();
        assert!(!page.contains("<img") && !page.contains("</script>") && !page.contains('\x1b'), "{page}");
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;&lt;/script&gt;"), "{page}");
        assert!(page.contains("\u{241b}[31mred\\u{202e}gpj.exe\u{240d}"), "{page}");
        let attr = html! { a title=(shown("\"><script>")) {} }.into_string();
        assert!(!attr.contains("\"><script>"), "{attr}");
        assert_eq!(shown_line("a\nb\tc"), "a\u{2424}b\u{2409}c");
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-02T00:00:01Z"), Some(86_401));
        assert_eq!(parse_time("2024-03-01T00:00:00.123Z"), Some(1_709_251_200));
        assert_eq!(parse_time("garbage"), None);
        assert_eq!(until("1970-01-01T00:00:00Z"), "expired");
        for t in [0, 86_401, 1_709_251_200, 4_102_444_799] {
            assert_eq!(parse_time(&rfc3339(t)), Some(t));
        }
        assert_eq!(rfc3339(1_709_251_200), "2024-03-01T00:00:00Z");
    }
}
