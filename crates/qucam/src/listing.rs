//! Bounded decoding of a `get_video_files_info` reply: at most a given number of entries
//! are ever built, and no [`Value`] of the listing is materialised, so a hostile camera
//! sending a huge array (of `{}`, say) costs the reply's bytes and little more.
//!
//! Every quirk of [`decode_envelope`](crate::reply::decode_envelope) and
//! [`decode_file_list`](crate::reply::decode_file_list) is kept: `data` as an array or as
//! a string holding JSON (decoded in place, with the same bound), `errorCode` as a number
//! or a string, "Camera Busy" under a success code, non-object entries skipped, unknown
//! fields ignored, the last of repeated fields kept. Past the bound the rest of the array
//! is only scanned (to tell valid JSON from a message, as before, and to count it), never
//! stored, and the reply ends in [`CameraError::ListingTooLong`].

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::clip_name::excerpt;
use crate::error::CameraError;
use crate::reply::{
    FileEntry, lenient_bool, lenient_i64, lenient_str, malformed, mentions_busy, parse_envelope,
};

/// Entries accepted beyond the `count` asked for (a camera adding a clip mid-reply).
pub const LIST_SLACK: usize = 16;
/// Entries accepted when no `count` was asked for.
pub const DEFAULT_MAX_ENTRIES: usize = 200_000;

/// What a listing `data` turned out to be.
enum ListData {
    /// Missing or `null`.
    Empty,
    /// A message (a string that is not JSON).
    Text(String),
    /// JSON, decoded with the bound.
    Parsed(Parsed),
}

/// A JSON listing decoded with a bound.
enum Parsed {
    /// An array of at most the bound.
    List(Vec<FileEntry>),
    /// An array longer than the bound (`listed` entries in all).
    TooMany { listed: usize },
    /// Valid JSON, but not an array (the excerpt is for the message).
    NotList(String),
}

/// Decodes a whole `get_video_files_info` reply, building at most `max_entries` entries.
///
/// ```
/// use qucam::CameraError;
/// use qucam::listing::decode_file_list_reply;
///
/// let body = br#"{"data":"[{\"name\":\"a.mp4\",\"size\":\"12\"},{}]","errorCode":"200","isSuccess":true}"#;
/// let files = decode_file_list_reply(body, 2)?;
/// assert_eq!(files[0].size, Some(12));
/// let e = decode_file_list_reply(body, 1).unwrap_err();
/// assert!(matches!(e, CameraError::ListingTooLong { limit: 1, listed: 2 }));
/// # Ok::<(), CameraError>(())
/// ```
pub fn decode_file_list_reply(
    body: &[u8],
    max_entries: usize,
) -> Result<Vec<FileEntry>, CameraError> {
    let env = parse_envelope(body)?;
    let data = match env.data.map(|r| r.get()) {
        None | Some("null") => ListData::Empty,
        Some(raw) if raw.starts_with('"') => {
            let s = unescape(raw).ok_or_else(|| malformed("reply is not JSON", body))?;
            string_data(s, max_entries)
        }
        Some(raw) => ListData::Parsed(
            bounded(raw, max_entries).map_err(|_| malformed("reply is not JSON", body))?,
        ),
    };
    let busy_text = matches!(&data, ListData::Text(t) if mentions_busy(t));
    if busy_text || env.code == Some(301) {
        return Err(CameraError::Busy);
    }
    if !env.success {
        let message = match data {
            // Masked, cut, line breaks and escapes replaced: as `decode_envelope` says it.
            ListData::Text(t) => crate::clip_name::message_excerpt(&t),
            ListData::Parsed(Parsed::List(_) | Parsed::TooMany { .. }) => {
                json_excerpt(env.data.map_or("", |r| r.get()))
            }
            ListData::Parsed(Parsed::NotList(e)) => e,
            ListData::Empty => String::new(),
        };
        return Err(env.refusal(message));
    }
    match data {
        ListData::Empty => Ok(Vec::new()),
        ListData::Text(t) if t.trim().is_empty() => Ok(Vec::new()),
        ListData::Text(t) => Err(CameraError::Malformed {
            what: "file listing is a message, not a list".into(),
            excerpt: excerpt(&t),
        }),
        ListData::Parsed(Parsed::List(entries)) => Ok(entries),
        ListData::Parsed(Parsed::TooMany { listed }) => Err(CameraError::ListingTooLong {
            limit: max_entries,
            listed,
        }),
        ListData::Parsed(Parsed::NotList(e)) => Err(CameraError::Malformed {
            what: "file listing is not a list".into(),
            excerpt: e,
        }),
    }
}

/// A string `data`: JSON inside it is decoded with the bound, anything else is a message.
fn string_data(s: Cow<'_, str>, max_entries: usize) -> ListData {
    let t = s.trim();
    if (t.starts_with('[') || t.starts_with('{'))
        && let Ok(p) = bounded(t, max_entries)
    {
        return ListData::Parsed(p);
    }
    ListData::Text(s.into_owned())
}

/// The message excerpt of a JSON value, as `excerpt(value.to_string())` gives it; a huge
/// value is excerpted from its text instead of being parsed.
fn json_excerpt(json: &str) -> String {
    let json = match json.strip_prefix('"') {
        Some(_) => unescape(json).unwrap_or_default(),
        None => Cow::Borrowed(json),
    };
    if json.len() <= 64 * 1024
        && let Ok(v) = serde_json::from_str::<Value>(json.trim())
    {
        return excerpt(&v.to_string());
    }
    excerpt(json.trim())
}

/// Decodes JSON text with at most `max` entries built.
fn bounded(json: &str, max: usize) -> Result<Parsed, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    let parsed = TopSeed { max }.deserialize(&mut de)?;
    de.end()?;
    Ok(match parsed {
        // Valid JSON but no list: excerpted as the message shows it.
        Parsed::NotList(_) => Parsed::NotList(json_excerpt(json)),
        p => p,
    })
}

struct TopSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for TopSeed {
    type Value = Parsed;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parsed, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed {
    type Value = Parsed;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
        let mut entries = Vec::new();
        let mut listed = 0usize;
        while listed < self.max {
            match seq.next_element::<Element>()? {
                Some(Element(e)) => {
                    listed += 1;
                    entries.extend(e);
                }
                None => return Ok(Parsed::List(entries)),
            }
        }
        // At the bound: scan the rest (nothing kept) to count it and check it is JSON.
        let mut more = 0usize;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            more += 1;
        }
        if more == 0 {
            return Ok(Parsed::List(entries));
        }
        Ok(Parsed::TooMany {
            listed: listed + more,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Parsed::NotList(String::new()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Parsed, E> {
        Ok(Parsed::NotList(String::new()))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Parsed, E> {
        Ok(Parsed::NotList(String::new()))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Parsed, E> {
        Ok(Parsed::NotList(String::new()))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Parsed, E> {
        Ok(Parsed::NotList(String::new()))
    }

    fn visit_str<E>(self, _: &str) -> Result<Parsed, E> {
        Ok(Parsed::NotList(String::new()))
    }

    fn visit_unit<E>(self) -> Result<Parsed, E> {
        Ok(Parsed::NotList(String::new()))
    }
}

/// One listing element: an entry when it is an object, `None` (skipped) otherwise.
struct Element(Option<FileEntry>);

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a listing entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
        let mut f: [Option<Value>; 6] = Default::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let slot = match key.as_ref() {
                "name" => 0,
                "path" => 1,
                "size" => 2,
                "date" => 3,
                "duration_long" => 4,
                "isDirectory" => 5,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            f[slot] = Some(map.next_value::<Scalar>()?.0);
        }
        Ok(Element(Some(FileEntry {
            name: lenient_str(f[0].as_ref()).unwrap_or_default(),
            path: lenient_str(f[1].as_ref()).unwrap_or_default(),
            size: lenient_i64(f[2].as_ref()),
            date_ms: lenient_i64(f[3].as_ref()),
            duration_ms: lenient_i64(f[4].as_ref()),
            is_directory: lenient_bool(f[5].as_ref()).unwrap_or(false),
        })))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Element(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Element, E> {
        Ok(Element(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Element, E> {
        Ok(Element(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Element, E> {
        Ok(Element(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Element, E> {
        Ok(Element(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Element, E> {
        Ok(Element(None))
    }

    fn visit_unit<E>(self) -> Result<Element, E> {
        Ok(Element(None))
    }
}

/// An entry field as a small [`Value`]: scalars kept, arrays and objects skipped (the
/// lenient readers make nothing of them) and seen as `null`.
struct Scalar(Value);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar(Value::String(v.to_string())))
    }

    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar(Value::Null))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar(Value::Null))
    }
}

/// The content of a JSON string literal (`raw` includes the quotes, already checked by
/// the parser): borrowed when it has no escapes, else unescaped into one new string.
/// `None` for what serde_json would refuse (a lone surrogate).
fn unescape(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i + 1..i + 2)?;
        rest = &rest[i + 2..];
        match esc {
            "\"" | "\\" | "/" => out.push_str(esc),
            "b" => out.push('\u{8}'),
            "f" => out.push('\u{c}'),
            "n" => out.push('\n'),
            "r" => out.push('\r'),
            "t" => out.push('\t'),
            "u" => {
                let hi = hex4(rest)?;
                rest = &rest[4..];
                let c = if (0xD800..0xDC00).contains(&hi) {
                    let lo = hex4(rest.strip_prefix("\\u")?)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    rest = &rest[6..];
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                out.push(char::from_u32(c)?);
            }
            _ => return None,
        }
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

fn hex4(s: &str) -> Option<u32> {
    u32::from_str_radix(s.get(..4)?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::{decode_envelope, decode_file_list};

    /// The bounded decoder agrees with the unbounded one (envelope, then list) when the
    /// bound is not reached: same entries, or the same error message.
    fn same_as_unbounded(body: &str) {
        let old = decode_envelope(body.as_bytes()).and_then(decode_file_list);
        let new = decode_file_list_reply(body.as_bytes(), 1000);
        match (&old, &new) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{body}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{body}"),
            _ => panic!("{body}: unbounded {old:?}, bounded {new:?}"),
        }
    }

    #[test]
    fn every_quirk_as_before() {
        for body in [
            r#"{"data":[{"name":"n","path":"/p","size":"12","date":1.5e3,"isDirectory":"true"}],"errorCode":200,"isSuccess":true}"#,
            r#"{"data":"[{\"name\":\"n\",\"path\":\"/p\\u00e9\\ud83d\\ude00\",\"size\":12,\"x\":[1,{}]}]","errorCode":"200","isSuccess":true}"#,
            r#"{"data":" [ {} , 5, \"s\", [1,2], null ] ","errorCode":200}"#,
            r#"{"data":"[]","errorCode":200,"isSuccess":true}"#,
            r#"{"data":"","errorCode":200,"isSuccess":true}"#,
            r#"{"data":null,"errorCode":200,"isSuccess":true}"#,
            r#"{"errorCode":200}"#,
            r#"{"data":"Camera Busy","errorCode":200,"isSuccess":true}"#,
            r#"{"data":"[1,2","errorCode":200,"isSuccess":true}"#,
            r#"{"data":"[{}]","errorCode":"301","isSuccess":true}"#,
            r#"{"data":"[{\"a\":1}]","errorCode":"errorCode","isSuccess":false}"#,
            r#"{"data":[{"a":1}],"errorCode":500,"isSuccess":"false"}"#,
            r#"{"data":"no such thing","errorCode":404,"isSuccess":false}"#,
            r#"{"data":{"a":[1,2]},"errorCode":200,"isSuccess":true}"#,
            r#"{"data":"{\"a\":1}","errorCode":200,"isSuccess":1}"#,
            r#"{"data":7,"errorCode":[1],"isSuccess":true}"#,
            r#"{"data":[{"name":"a"}],"data":[{"name":"b"}],"errorCode":200}"#,
            r#"{"data":[{"name":"a","name":"b","size":[1],"date":{"x":1}}],"errorCode":200}"#,
            "\u{feff}{\"data\":[],\"errorCode\":200}",
            r#"[1,2]"#,
            r#"{"data":[] "#,
            r#"{"data":[]} x"#,
            "<html>502</html>",
        ] {
            same_as_unbounded(body);
        }
    }

    #[test]
    fn past_the_bound_is_a_clear_error_for_both_shapes() {
        let many = format!("[{}]", vec!["{}"; 100].join(","));
        let as_array = format!(r#"{{"data":{many},"errorCode":200,"isSuccess":true}}"#);
        let as_string = format!(r#"{{"data":"{many}","errorCode":200,"isSuccess":true}}"#);
        for body in [&as_array, &as_string] {
            let e = decode_file_list_reply(body.as_bytes(), 66).unwrap_err();
            assert!(
                matches!(
                    e,
                    CameraError::ListingTooLong {
                        limit: 66,
                        listed: 100
                    }
                ),
                "{e:?}"
            );
            assert!(e.to_string().contains("more entries than asked for"), "{e}");
            assert!(!e.is_transient());
            assert_eq!(
                decode_file_list_reply(body.as_bytes(), 100).unwrap().len(),
                100
            );
        }
        // Busy and refusals are still told apart from a long list.
        let busy = format!(r#"{{"data":{many},"errorCode":301,"isSuccess":true}}"#);
        assert!(matches!(
            decode_file_list_reply(busy.as_bytes(), 1),
            Err(CameraError::Busy)
        ));
        let refused = format!(r#"{{"data":"{many}","errorCode":500,"isSuccess":false}}"#);
        assert!(matches!(
            decode_file_list_reply(refused.as_bytes(), 1),
            Err(CameraError::Api {
                code: Some(500),
                ..
            })
        ));
    }

    #[test]
    fn unescape_matches_serde_json() {
        for raw in [
            r#""plain""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""\u00e9\ud83d\ude00x""#,
            r#""""#,
        ] {
            let want: String = serde_json::from_str(raw).unwrap();
            assert_eq!(unescape(raw).unwrap(), want, "{raw}");
        }
        assert!(unescape(r#""\ud83d""#).is_none());
        assert!(serde_json::from_str::<String>(r#""\ud83d""#).is_err());
    }
}
