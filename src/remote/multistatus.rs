//! Parsing of the `207 Multi-Status` body a WebDAV server sends back for PROPFIND.
//!
//! The parser is namespace-aware: elements count only when they resolve to the `DAV:`
//! namespace, whatever prefix the server chose (`D:`, `d:`, `lp1:`, a default namespace).
//! Hrefs are untrusted input: anything that does not lie under the mounted collection, or
//! that could smuggle a path component (`..`, `.`, an encoded `/`, NUL), is dropped.
//!
//! Over 600 lines with its tests of hostile and real servers' bodies (the parser is
//! about 460).

use std::time::SystemTime;

use percent_encoding::percent_decode_str;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;

use super::{Entry, RemoteError};

const DAV_NS: Namespace<'static> = Namespace(b"DAV:");
const OC_NS: Namespace<'static> = Namespace(b"http://owncloud.org/ns");
const META_NS: Namespace<'static> = Namespace(super::META_NS.as_bytes());

/// One `<response>` of a multistatus, resolved against the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEntry {
    /// Decoded path relative to the mount: "/" for the root, "/dir/a file" otherwise.
    pub rel_path: String,
    pub entry: Entry,
    /// False for a file whose `getcontentlength` was missing, negative or not a number:
    /// `entry.size` is then 0 and means nothing (the backend learns the size elsewhere).
    pub size_known: bool,
    /// RFC 4331 quota: bytes available and used, when the server reported them.
    pub quota: (Option<u64>, Option<u64>),
}

/// Parses a PROPFIND reply.
///
/// `base_path` is the URL path of the mounted collection as it appears (encoded) in the
/// base URL, e.g. `/dav/share/`. `request_path` is the decoded, mount-relative path the
/// PROPFIND was sent to; only that resource and its direct children are returned, so a
/// confused or hostile server cannot inject entries elsewhere in the tree.
pub fn parse_multistatus(
    body: &[u8],
    base_path: &str,
    request_path: &str,
) -> Result<Vec<ParsedEntry>, RemoteError> {
    parse_multistatus_from(body, base_path, request_path)
}

/// `parse_multistatus` reading the body as it comes (from a stream, say): memory holds
/// the entries, never the whole body.
pub fn parse_multistatus_from(
    body: impl std::io::BufRead,
    base_path: &str,
    request_path: &str,
) -> Result<Vec<ParsedEntry>, RemoteError> {
    let base = decode_path(base_path)
        .map_err(|why| RemoteError::BadReply(format!("base path {base_path:?}: {why}")))?;
    let request: Vec<&str> = request_path.split('/').filter(|s| !s.is_empty()).collect();

    let mut out = Vec::new();
    read_responses(body, |resp| {
        // A response-level status (instead of propstats) reports a resource that could
        // not be read, typically 404 inside a Depth 1 listing.
        if let Some(status) = resp.status {
            if !(200..300).contains(&status) {
                tracing::debug!(href = %resp.href, status, "skipping response with non-2xx status");
                return;
            }
        }
        let segments = match href_segments(&resp.href, &base) {
            Ok(s) => s,
            Err(why) => {
                tracing::warn!(href = %resp.href, "ignoring href from server: {why}");
                return;
            }
        };
        let is_self = segments.len() == request.len();
        let is_child = segments.len() == request.len() + 1;
        if !(is_self || is_child) || segments.iter().zip(&request).any(|(a, b)| a != b) {
            tracing::warn!(href = %resp.href, request_path, "ignoring href outside the requested collection");
            return;
        }
        let rel_path = format!("/{}", segments.join("/"));
        let name = segments.last().cloned().unwrap_or_default();
        out.push(ParsedEntry {
            rel_path,
            size_known: resp.props.is_dir || resp.props.size.is_some(),
            entry: Entry {
                name,
                is_dir: resp.props.is_dir,
                size: if resp.props.is_dir {
                    0
                } else {
                    resp.props.size.unwrap_or(0)
                },
                mtime: resp.props.mtime,
                etag: resp
                    .props
                    .etag
                    .clone()
                    .or_else(|| stand_in_etag(&resp.props)),
                checksum: resp.props.checksum.clone(),
                meta: (!resp.props.meta.is_empty()).then(|| resp.props.meta.clone()),
            },
            quota: (resp.props.quota_available, resp.props.quota_used),
        });
    })?;
    Ok(out)
}

/// A version tag for a file the server lists without `getetag` (nginx's dav-ext module
/// sends none): its modification time and size, marked weak so that it is never sent in
/// `If-Match` (the replayer compares it by asking again instead). A change within the
/// same second that keeps the size is not seen: such servers give nothing better.
fn stand_in_etag(p: &Props) -> Option<String> {
    if p.is_dir {
        return None;
    }
    let secs = p
        .mtime?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(format!("W/\"davdrive-{secs}-{}\"", p.size.unwrap_or(0)))
}

/// The props we care about, merged over every `200` propstat of one response.
#[derive(Debug, Default, Clone)]
struct Props {
    is_dir: bool,
    size: Option<u64>,
    /// A `getcontentlength` that is not a size was sent.
    size_invalid: bool,
    mtime: Option<SystemTime>,
    etag: Option<String>,
    checksum: Option<String>,
    quota_available: Option<u64>,
    quota_used: Option<u64>,
    /// davdrive's dead properties (`super::Meta`).
    meta: super::Meta,
}

impl Props {
    fn merge(&mut self, other: Props) {
        self.is_dir |= other.is_dir;
        self.size_invalid |= other.size_invalid;
        self.size = other.size.or(self.size);
        if self.size_invalid {
            // Two propstats disagreeing about the length: neither is believed.
            self.size = None;
        }
        self.mtime = other.mtime.or(self.mtime);
        self.etag = other.etag.or(self.etag.take());
        self.checksum = other.checksum.or(self.checksum.take());
        self.quota_available = other.quota_available.or(self.quota_available);
        self.quota_used = other.quota_used.or(self.quota_used);
        let (m, o) = (&mut self.meta, other.meta);
        m.mode = o.mode.or(m.mode);
        m.uid = o.uid.or(m.uid);
        m.gid = o.gid.or(m.gid);
        m.mtime_ns = o.mtime_ns.or(m.mtime_ns);
        m.atime_ns = o.atime_ns.or(m.atime_ns);
        m.etag = o.etag.or(m.etag.take());
        m.link = o.link.or(m.link.take());
    }
}

#[derive(Debug, Default)]
struct RawResponse {
    href: String,
    status: Option<u16>,
    props: Props,
}

/// Where an element sits in the multistatus grammar. Elements are classified by their
/// parent too, so e.g. an `<href>` inside `<lockdiscovery>` is not taken for the
/// response's own href.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Multistatus,
    Response,
    Href,
    Propstat,
    ResponseStatus,
    PropstatStatus,
    Prop,
    ResourceType,
    Collection,
    ContentLength,
    LastModified,
    GetEtag,
    QuotaAvailable,
    QuotaUsed,
    /// `oc:checksums` (Nextcloud, ownCloud) and the `oc:checksum` inside it.
    OcChecksums,
    OcChecksum,
    /// One of davdrive's dead properties (`META_NS`), by its index in `META_PROPS`.
    Meta(u8),
    Other,
}

/// The local names of davdrive's dead properties that are read back.
const META_PROPS: [&str; 7] = ["mode", "uid", "gid", "mtime", "atime", "etag", "link"];

impl Tag {
    fn classify(parent: Option<Tag>, ns: &ResolveResult, local: &[u8]) -> Tag {
        if matches!(ns, ResolveResult::Bound(n) if *n == OC_NS) {
            return match (parent, local) {
                (Some(Tag::Prop), b"checksums") => Tag::OcChecksums,
                (Some(Tag::OcChecksums), b"checksum") => Tag::OcChecksum,
                _ => Tag::Other,
            };
        }
        if matches!(ns, ResolveResult::Bound(n) if *n == META_NS) {
            return match parent {
                Some(Tag::Prop) => META_PROPS
                    .iter()
                    .position(|p| p.as_bytes() == local)
                    .map_or(Tag::Other, |i| Tag::Meta(i as u8)),
                _ => Tag::Other,
            };
        }
        if !matches!(ns, ResolveResult::Bound(n) if *n == DAV_NS) {
            return Tag::Other;
        }
        match (parent, local) {
            (None, b"multistatus") => Tag::Multistatus,
            (Some(Tag::Multistatus), b"response") => Tag::Response,
            (Some(Tag::Response), b"href") => Tag::Href,
            (Some(Tag::Response), b"propstat") => Tag::Propstat,
            (Some(Tag::Response), b"status") => Tag::ResponseStatus,
            (Some(Tag::Propstat), b"prop") => Tag::Prop,
            (Some(Tag::Propstat), b"status") => Tag::PropstatStatus,
            (Some(Tag::Prop), b"resourcetype") => Tag::ResourceType,
            (Some(Tag::Prop), b"getcontentlength") => Tag::ContentLength,
            (Some(Tag::Prop), b"getlastmodified") => Tag::LastModified,
            (Some(Tag::Prop), b"getetag") => Tag::GetEtag,
            (Some(Tag::Prop), b"quota-available-bytes") => Tag::QuotaAvailable,
            (Some(Tag::Prop), b"quota-used-bytes") => Tag::QuotaUsed,
            (Some(Tag::ResourceType), b"collection") => Tag::Collection,
            _ => Tag::Other,
        }
    }

    fn has_text(self) -> bool {
        matches!(
            self,
            Tag::Href
                | Tag::ResponseStatus
                | Tag::PropstatStatus
                | Tag::ContentLength
                | Tag::QuotaAvailable
                | Tag::QuotaUsed
                | Tag::LastModified
                | Tag::GetEtag
                | Tag::OcChecksum
                | Tag::Meta(_)
        )
    }
}

fn bad(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::BadReply(format!("multistatus XML: {e}"))
}

/// Walks the XML and hands each raw response to `found`, props already filtered by
/// status.
fn read_responses(
    body: impl std::io::BufRead,
    mut found: impl FnMut(RawResponse),
) -> Result<(), RemoteError> {
    let mut reader = NsReader::from_reader(body);
    let mut buf = Vec::new();
    // The default, restated because the element stack below relies on it: a mismatched
    // end tag must be an error, not silently accepted.
    reader.config_mut().check_end_names = true;

    let mut stack: Vec<Tag> = Vec::new();
    let mut text = String::new();
    let mut seen_root = false;
    let mut response: Option<RawResponse> = None;
    let mut has_href = false;
    // (status, props) of the propstat being read.
    let mut propstat: (Option<u16>, Props) = (None, Props::default());

    loop {
        buf.clear();
        let (ns, event) = reader.read_resolved_event_into(&mut buf).map_err(bad)?;
        let (start, end): (Option<&BytesStart>, bool) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            Event::End(_) => (None, true),
            Event::Text(t) if stack.last().is_some_and(|t| t.has_text()) => {
                text.push_str(&t.decode().map_err(bad)?);
                continue;
            }
            Event::CData(t) if stack.last().is_some_and(|t| t.has_text()) => {
                text.push_str(&t.decode().map_err(bad)?);
                continue;
            }
            // quick-xml reports `&amp;`, `&#x20;`... separately from the text around them.
            Event::GeneralRef(r) if stack.last().is_some_and(|t| t.has_text()) => {
                if let Some(c) = r.resolve_char_ref().map_err(bad)? {
                    text.push(c);
                } else {
                    let name = r.decode().map_err(bad)?;
                    let value = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| bad(format!("unknown entity &{name};")))?;
                    text.push_str(value);
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };

        if let Some(e) = start {
            let tag = Tag::classify(stack.last().copied(), &ns, e.local_name().as_ref());
            if stack.is_empty() {
                if tag != Tag::Multistatus {
                    return Err(bad("root element is not DAV:multistatus"));
                }
                seen_root = true;
            }
            match tag {
                Tag::Response => {
                    response = Some(RawResponse::default());
                    has_href = false;
                }
                Tag::Propstat => propstat = (None, Props::default()),
                Tag::Collection => propstat.1.is_dir = true,
                _ => {}
            }
            if tag.has_text() {
                text.clear();
            }
            stack.push(tag);
        }
        if !end {
            continue;
        }

        let tag = stack.pop().ok_or_else(|| bad("unbalanced end tag"))?;
        let value = if tag.has_text() { text.trim() } else { "" };
        match tag {
            Tag::Href => {
                if let Some(r) = response.as_mut() {
                    r.href = value.to_string();
                    has_href = true;
                }
            }
            Tag::ResponseStatus => {
                if let Some(r) = response.as_mut() {
                    r.status = parse_status(value);
                }
            }
            Tag::PropstatStatus => propstat.0 = parse_status(value),
            // Negative, fractional, non-numeric or beyond what a file can hold (i64, as
            // the node table keeps it): unknown, never 0 or a wrapped value.
            Tag::ContentLength => match value.parse::<u64>() {
                Ok(n) if n <= i64::MAX as u64 => propstat.1.size = Some(n),
                // Servers list properties they lack, empty, in a 404 propstat.
                Err(_) if value.trim().is_empty() => {}
                _ => {
                    propstat.1.size_invalid = true;
                    tracing::warn!(value, "getcontentlength is not a size: taken as unknown")
                }
            },
            Tag::LastModified => match httpdate::parse_http_date(value) {
                Ok(t) => propstat.1.mtime = Some(t),
                Err(_) => tracing::debug!(value, "ignoring unparsable getlastmodified"),
            },
            Tag::GetEtag if !value.is_empty() => propstat.1.etag = Some(value.to_string()),
            Tag::OcChecksum if !value.is_empty() => propstat.1.checksum = Some(value.to_string()),
            // Negative or unparsable values mean "unknown" (RFC 4331).
            Tag::QuotaAvailable => propstat.1.quota_available = value.trim().parse().ok(),
            Tag::QuotaUsed => propstat.1.quota_used = value.trim().parse().ok(),
            Tag::Meta(i) => propstat.1.meta.set_prop(META_PROPS[i as usize], value),
            Tag::Propstat => {
                // Props listed under 404 (or any non-200) status were not found: ignore.
                let (status, props) = std::mem::take(&mut propstat);
                if status == Some(200) {
                    if let Some(r) = response.as_mut() {
                        r.props.merge(props);
                    }
                }
            }
            Tag::Response => {
                let r = response.take().unwrap_or_default();
                if !has_href {
                    return Err(bad("<response> without <href>"));
                }
                found(r);
            }
            _ => {}
        }
        text.clear();
    }

    if !seen_root {
        return Err(bad("no DAV:multistatus element"));
    }
    if !stack.is_empty() {
        return Err(bad("document ends inside an element"));
    }
    Ok(())
}

/// "HTTP/1.1 200 OK" -> 200.
fn parse_status(line: &str) -> Option<u16> {
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Decoded segments of the href relative to `base`, or why it is unacceptable.
fn href_segments(href: &str, base: &[String]) -> Result<Vec<String>, String> {
    let path = if href.starts_with('/') {
        href
    } else if let Some(i) = href.find("://") {
        // Absolute URL: drop scheme and authority. The host is not checked: a server
        // behind a proxy often reports its own internal name.
        let rest = &href[i + 3..];
        rest.find('/').map_or("/", |j| &rest[j..])
    } else {
        return Err("not an absolute path or URL".into());
    };
    // A raw '?' or '#' starts a query or fragment; names containing them arrive encoded.
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let mut segments = decode_path(path)?;
    if segments.len() < base.len() || segments[..base.len()] != *base {
        return Err("not under the mounted collection".into());
    }
    Ok(segments.split_off(base.len()))
}

/// Splits an encoded absolute path into decoded segments, rejecting anything that could
/// alter the path's meaning once decoded.
pub(super) fn decode_path(path: &str) -> Result<Vec<String>, String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| "path is not absolute".to_string())?;
    // A single trailing slash is how collections are spelled.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/')
        .map(|raw| {
            let seg = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| "segment is not UTF-8".to_string())?;
            match &*seg {
                "" => Err("empty path segment".into()),
                "." | ".." => Err("dot segment".into()),
                s if s.contains(['/', '\0']) => Err("'/' or NUL inside a segment".into()),
                s => Ok(s.to_string()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn by_path<'a>(v: &'a [ParsedEntry], p: &str) -> &'a Entry {
        &v.iter()
            .find(|e| e.rel_path == p)
            .unwrap_or_else(|| panic!("{p} missing in {v:?}"))
            .entry
    }

    #[test]
    fn apache_style() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:ns0="DAV:">
<D:response xmlns:lp1="DAV:" xmlns:lp2="http://apache.org/dav/props/">
<D:href>/dav/share/dir/</D:href>
<D:propstat>
<D:prop>
<lp1:resourcetype><D:collection/></lp1:resourcetype>
<lp1:getlastmodified>Tue, 15 Nov 1994 12:45:26 GMT</lp1:getlastmodified>
<lp1:getetag>"1000-5a1b"</lp1:getetag>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
</D:response>
<D:response xmlns:lp1="DAV:" xmlns:lp2="http://apache.org/dav/props/">
<D:href>/dav/share/dir/file.txt</D:href>
<D:propstat>
<D:prop>
<lp1:resourcetype/>
<lp1:getcontentlength>1234</lp1:getcontentlength>
<lp1:getlastmodified>Tue, 15 Nov 1994 12:45:26 GMT</lp1:getlastmodified>
<lp1:getetag>W/"4d2-5a1b"</lp1:getetag>
<lp2:executable>F</lp2:executable>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
</D:response>
</D:multistatus>"#;
        let v = parse_multistatus(body, "/dav/share/", "/dir").unwrap();
        assert_eq!(v.len(), 2);
        let d = by_path(&v, "/dir");
        assert!(d.is_dir);
        assert_eq!(d.name, "dir");
        assert_eq!(d.etag.as_deref(), Some("\"1000-5a1b\""));
        assert_eq!(d.mtime, Some(UNIX_EPOCH + Duration::from_secs(784903526)));
        let f = by_path(&v, "/dir/file.txt");
        assert!(!f.is_dir);
        assert_eq!(f.size, 1234);
        assert_eq!(f.name, "file.txt");
        assert_eq!(f.etag.as_deref(), Some("W/\"4d2-5a1b\""));
    }

    #[test]
    fn nginx_style_lowercase_prefix() {
        let body = br#"<?xml version="1.0" encoding="utf-8" ?>
<d:multistatus xmlns:d="DAV:">
<d:response><d:href>/</d:href><d:propstat><d:prop>
<d:resourcetype><d:collection></d:collection></d:resourcetype>
<d:getlastmodified>Sun, 06 Nov 1994 08:49:37 GMT</d:getlastmodified>
</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
<d:response><d:href>/a.bin</d:href><d:propstat><d:prop>
<d:resourcetype></d:resourcetype><d:getcontentlength>7</d:getcontentlength>
<d:getlastmodified>Sun, 06 Nov 1994 08:49:37 GMT</d:getlastmodified>
</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
</d:multistatus>"#;
        let v = parse_multistatus(body, "/", "/").unwrap();
        assert_eq!(v.len(), 2);
        let root = by_path(&v, "/");
        assert!(root.is_dir);
        assert_eq!(root.name, "");
        assert_eq!(root.etag, None);
        let f = by_path(&v, "/a.bin");
        assert_eq!((f.is_dir, f.size), (false, 7));
        // nginx lists no getetag: a weak stand-in from mtime and size marks the version.
        assert_eq!(f.etag.as_deref(), Some("W/\"davdrive-784111777-7\""));
    }

    #[test]
    fn default_namespace_and_absolute_urls() {
        let body = br#"<multistatus xmlns="DAV:">
<response><href>https://example.com:8443/remote.php/dav/files/u/</href>
<propstat><prop><resourcetype><collection/></resourcetype></prop>
<status>HTTP/1.1 200 OK</status></propstat></response>
<response><href>https://example.com:8443/remote.php/dav/files/u/x%20y.txt</href>
<propstat><prop><getcontentlength>3</getcontentlength><getetag>"e"</getetag></prop>
<status>HTTP/1.1 200 OK</status></propstat></response>
</multistatus>"#;
        let v = parse_multistatus(body, "/remote.php/dav/files/u/", "/").unwrap();
        assert_eq!(v.len(), 2);
        assert!(by_path(&v, "/").is_dir);
        let f = by_path(&v, "/x y.txt");
        assert_eq!(f.name, "x y.txt");
        assert_eq!(f.size, 3);
    }

    #[test]
    fn non_dav_elements_with_dav_names_are_ignored() {
        // `collection` in another namespace must not make a directory.
        let body = br#"<D:multistatus xmlns:D="DAV:" xmlns:X="urn:x">
<D:response><D:href>/f</D:href><D:propstat><D:prop>
<D:resourcetype><X:collection/></D:resourcetype><X:getcontentlength>9</X:getcontentlength>
<D:getcontentlength>5</D:getcontentlength>
</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
</D:multistatus>"#;
        let v = parse_multistatus(body, "/", "/f").unwrap();
        let f = by_path(&v, "/f");
        assert!(!f.is_dir);
        assert_eq!(f.size, 5);
    }

    #[test]
    fn odd_names_round_trip() {
        let names = [
            "a b.txt",
            "ünïcödé ✓.md",
            "100%.txt",
            "#hash",
            "what?.txt",
            "a+b.txt",
            "semi;colon&amp=x",
            "日本語",
        ];
        const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let mut body = String::from(r#"<D:multistatus xmlns:D="DAV:">"#);
        for n in names {
            let enc = percent_encoding::utf8_percent_encode(n, SET);
            body.push_str(&format!(
                "<D:response><D:href>/base/dir/{enc}</D:href><D:propstat><D:prop>\
                 <D:getcontentlength>1</D:getcontentlength></D:prop>\
                 <D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
            ));
        }
        // Some servers leave '+' and other sub-delims unencoded: '+' is still a plus.
        body.push_str(
            "<D:response><D:href>/base/dir/raw+plus &amp; more</D:href><D:propstat><D:prop>\
             <D:getcontentlength>1</D:getcontentlength></D:prop>\
             <D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>",
        );
        body.push_str("</D:multistatus>");
        let v = parse_multistatus(body.as_bytes(), "/base/", "/dir").unwrap();
        assert_eq!(v.len(), names.len() + 1);
        for n in names {
            let e = by_path(&v, &format!("/dir/{n}"));
            assert_eq!(e.name, n);
        }
        assert_eq!(by_path(&v, "/dir/raw+plus & more").name, "raw+plus & more");
    }

    #[test]
    fn encoded_base_path_compares_decoded() {
        let body = br#"<D:multistatus xmlns:D="DAV:">
<D:response><D:href>/my%20share/f</D:href><D:propstat><D:prop/>
<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
<D:response><D:href>/my share/g</D:href><D:propstat><D:prop/>
<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
</D:multistatus>"#;
        let v = parse_multistatus(body, "/my%20share", "/").unwrap();
        let paths: Vec<_> = v.iter().map(|e| e.rel_path.as_str()).collect();
        assert_eq!(paths, ["/f", "/g"]);
    }

    #[test]
    fn hostile_hrefs_are_skipped() {
        let hrefs = [
            "/base/dir/../../etc/passwd",
            "/base/dir/%2e%2e/x",
            "/base/dir/./x",
            "/other/dir/x",
            "/basement/dir/x",
            "/base/dir/a%2Fb",
            "/base/dir/nul%00",
            "/base/dir//x",
            "/base/dir/sub/grandchild",
            "/base/elsewhere",
            "dir/relative",
            "/base/dir/bad%ffutf8",
        ];
        let mut body = String::from(r#"<D:multistatus xmlns:D="DAV:">"#);
        for h in hrefs.iter().chain(["/base/dir/ok"].iter()) {
            body.push_str(&format!(
                "<D:response><D:href>{h}</D:href><D:propstat><D:prop/>\
                 <D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
            ));
        }
        body.push_str("</D:multistatus>");
        let v = parse_multistatus(body.as_bytes(), "/base/", "/dir").unwrap();
        let paths: Vec<_> = v.iter().map(|e| e.rel_path.as_str()).collect();
        assert_eq!(paths, ["/dir/ok"]);
    }

    #[test]
    fn only_200_propstats_count() {
        let body = br#"<D:multistatus xmlns:D="DAV:">
<D:response><D:href>/f</D:href>
<D:propstat><D:prop><D:getcontentlength>10</D:getcontentlength>
<D:getetag>"good"</D:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
<D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype>
<D:getetag>"bogus"</D:getetag><D:getlastmodified/></D:prop>
<D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>
</D:response>
<D:response><D:href>/gone</D:href><D:status>HTTP/1.1 404 Not Found</D:status></D:response>
</D:multistatus>"#;
        let v = parse_multistatus(body, "/", "/").unwrap();
        assert_eq!(v.len(), 1);
        let f = by_path(&v, "/f");
        assert!(!f.is_dir);
        assert_eq!(f.size, 10);
        assert_eq!(f.etag.as_deref(), Some("\"good\""));
        assert_eq!(f.mtime, None);
    }

    #[test]
    fn lockdiscovery_href_is_not_the_response_href() {
        let body = br#"<D:multistatus xmlns:D="DAV:">
<D:response><D:href>/f</D:href><D:propstat><D:prop>
<D:lockdiscovery><D:activelock><D:lockroot><D:href>/../evil</D:href></D:lockroot>
</D:activelock></D:lockdiscovery></D:prop>
<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
</D:multistatus>"#;
        let v = parse_multistatus(body, "/", "/f").unwrap();
        assert_eq!(v[0].rel_path, "/f");
    }

    #[test]
    fn malformed_xml_is_bad_reply() {
        let cases: [&[u8]; 6] = [
            b"<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>/x</D:href></D:multistatus>",
            b"<D:multistatus xmlns:D=\"DAV:\"><D:response>",
            b"<html><body>Not WebDAV</body></html>",
            b"",
            b"not xml at all",
            b"<D:multistatus xmlns:D=\"DAV:\"><D:response><D:propstat/></D:response></D:multistatus>",
        ];
        for body in cases {
            match parse_multistatus(body, "/", "/") {
                Err(RemoteError::BadReply(_)) => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn lengths_that_are_not_sizes_are_unknown() {
        let mut body = String::from(r#"<D:multistatus xmlns:D="DAV:">"#);
        for (name, len) in [
            ("neg", "-5"),
            ("nan", "twelve"),
            ("frac", "1.5"),
            ("huge", "99999999999999999999"),
            ("over_i64", "9223372036854775808"),
            ("ok", " 7 "),
            ("missing", ""),
        ] {
            let prop = if name == "missing" {
                String::new()
            } else {
                format!("<D:getcontentlength>{len}</D:getcontentlength>")
            };
            body.push_str(&format!(
                "<D:response><D:href>/{name}</D:href><D:propstat><D:prop>{prop}</D:prop>\
                 <D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
            ));
        }
        body.push_str("</D:multistatus>");
        let v = parse_multistatus(body.as_bytes(), "/", "/").unwrap();
        let known = |n: &str| {
            let e = v.iter().find(|e| e.rel_path == format!("/{n}")).unwrap();
            e.size_known.then_some(e.entry.size)
        };
        for n in ["neg", "nan", "frac", "huge", "over_i64", "missing"] {
            assert_eq!(known(n), None, "{n}");
        }
        assert_eq!(known("ok"), Some(7));
    }

    #[test]
    fn a_body_read_in_pieces_parses_the_same() {
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(3);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let body = br#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/a%20b</D:href>
<D:propstat><D:prop><D:getcontentlength>12</D:getcontentlength><D:getetag>"x&amp;y"</D:getetag>
</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
        let whole = parse_multistatus(body, "/", "/").unwrap();
        let pieces = parse_multistatus_from(
            std::io::BufReader::with_capacity(5, Trickle(body)),
            "/",
            "/",
        )
        .unwrap();
        assert_eq!(whole, pieces);
        assert_eq!(pieces[0].entry.etag.as_deref(), Some("\"x&y\""));
    }

    #[test]
    fn undeclared_prefix_is_not_dav() {
        // `D:` never bound to DAV: -> no multistatus root.
        let body = b"<D:multistatus><D:response><D:href>/</D:href></D:response></D:multistatus>";
        assert!(matches!(
            parse_multistatus(body, "/", "/"),
            Err(RemoteError::BadReply(_))
        ));
    }
}
