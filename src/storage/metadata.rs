//! `nsqd.dat`: which topics and channels exist and whether they are paused, in the exact JSON
//! nsqd v1.3.0 writes, read as Go reads it (v1.1's alphabetical keys and `[]`, v1.3's `null`,
//! any letter case, zero values for what is missing).
//! Written and read only at start-up and shutdown, on the main thread.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The file name inside `--data-path`.
pub const FILE_NAME: &str = "nsqd.dat";

/// One persisted channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ChannelMeta {
    /// Channel name.
    pub name: String,
    /// Paused channels deliver nothing after restart either.
    pub paused: bool,
}

/// One persisted topic (field order is nsqd's JSON order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct TopicMeta {
    /// Topic name.
    pub name: String,
    /// Paused topics keep their backlog after restart.
    pub paused: bool,
    /// `null` when empty, as Go encodes a nil slice.
    #[serde(serialize_with = "null_if_empty")]
    pub channels: Vec<ChannelMeta>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Metadata {
    /// `null` when empty.
    #[serde(serialize_with = "null_if_empty")]
    pub topics: Vec<TopicMeta>,
    /// The writer's version.
    pub version: String,
}

fn null_if_empty<S: serde::Serializer, T: Serialize>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        s.collect_seq(v)
    }
}

/// nsqd.dat decoded as Go's `encoding/json` decodes it into nsqd's structs: keys match
/// case-insensitively, `null` (also the whole file) and missing keys leave zero values (a
/// topic without a name is then skipped as invalid, not fatal), unknown keys are ignored,
/// and a value of the wrong type is an error naming the field as Go does.
mod go_struct {
    use serde_json::{Map, Value};

    use super::{ChannelMeta, Metadata, TopicMeta};

    type Object = Map<String, Value>;

    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    fn mismatch(v: &Value, field: &str, ty: &str) -> String {
        format!(
            "json: cannot unmarshal {} into Go struct field {field} of type {ty}",
            kind(v)
        )
    }

    /// The value of `key`: an exact match first, else one that differs in letter case only.
    fn get<'a>(obj: &'a Object, key: &str) -> Option<&'a Value> {
        obj.get(key)
            .or_else(|| {
                obj.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            })
            .filter(|v| !v.is_null())
    }

    fn string(obj: &Object, key: &str, field: &str) -> Result<String, String> {
        match get(obj, key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(mismatch(v, field, "string")),
        }
    }

    fn boolean(obj: &Object, key: &str, field: &str) -> Result<bool, String> {
        match get(obj, key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(mismatch(v, field, "bool")),
        }
    }

    /// A slice of structs: `null` is empty, a `null` element is a zero struct.
    fn slice<T: Default>(
        obj: &Object,
        key: &str,
        field: &str,
        elem: &str,
        one: impl Fn(&Object) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let items = match get(obj, key) {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(v) => return Err(mismatch(v, field, &format!("[]nsqd.{elem}"))),
        };
        items
            .iter()
            .map(|item| match item {
                Value::Null => Ok(T::default()),
                Value::Object(o) => one(o),
                v => Err(mismatch(v, field, &format!("nsqd.{elem}"))),
            })
            .collect()
    }

    fn channel(o: &Object) -> Result<ChannelMeta, String> {
        Ok(ChannelMeta {
            name: string(o, "name", "ChannelMetadata.topics.channels.name")?,
            paused: boolean(o, "paused", "ChannelMetadata.topics.channels.paused")?,
        })
    }

    fn topic(o: &Object) -> Result<TopicMeta, String> {
        Ok(TopicMeta {
            name: string(o, "name", "TopicMetadata.topics.name")?,
            paused: boolean(o, "paused", "TopicMetadata.topics.paused")?,
            channels: slice(
                o,
                "channels",
                "TopicMetadata.topics.channels",
                "ChannelMetadata",
                channel,
            )?,
        })
    }

    /// The whole file, before names are checked.
    pub fn metadata(v: &Value) -> Result<Metadata, String> {
        let o = match v {
            Value::Null => return Ok(Metadata::default()),
            Value::Object(o) => o,
            v => {
                return Err(format!(
                    "json: cannot unmarshal {} into Go value of type nsqd.Metadata",
                    kind(v)
                ));
            }
        };
        Ok(Metadata {
            topics: slice(o, "topics", "Metadata.topics", "TopicMetadata", topic)?,
            version: string(o, "version", "Metadata.version")?,
        })
    }
}

impl Metadata {
    /// nsqd's compact JSON (no trailing newline).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses any nsqd.dat nsqd v1.1+ wrote; ephemeral names (never written by nsqd) are
    /// dropped so a hand-edited file cannot make them durable.
    pub fn parse(text: &str) -> Result<Metadata, String> {
        Self::parse_bytes(text.as_bytes())
    }

    /// [`Metadata::parse`] of the file's bytes, decoded as Go's JSON decoder does (bytes that
    /// are not UTF-8 become U+FFFD, so such a name is skipped as invalid, not fatal).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Metadata, String> {
        let value: serde_json::Value =
            crate::go_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let raw = go_struct::metadata(&value)?;
        // Ephemeral names are never persisted; invalid ones (which could name paths outside the
        // data path) are skipped with a warning, as nsqd does.
        let keep = |kind: &str, name: &str| {
            let valid = crate::protocol::names::is_valid_name(name.as_bytes());
            if !valid {
                tracing::warn!("skipping creation of invalid {kind} {name:?} from nsqd.dat");
            }
            valid && !crate::protocol::names::is_ephemeral(name)
        };
        let topics = raw
            .topics
            .into_iter()
            .filter(|t| keep("topic", &t.name))
            .map(|t| TopicMeta {
                channels: t
                    .channels
                    .into_iter()
                    .filter(|c| keep("channel", &c.name))
                    .collect(),
                ..t
            })
            .collect();
        Ok(Metadata {
            topics,
            version: raw.version,
        })
    }
}

/// `<data-path>/nsqd.dat`
pub fn path(data_path: &Path) -> PathBuf {
    data_path.join(FILE_NAME)
}

/// Reads nsqd.dat: `Ok(None)` when missing (fresh start), `Err` with nsqd's fatal message when
/// it cannot be parsed.
pub fn load(data_path: &Path) -> Result<Option<Metadata>, String> {
    let file = path(data_path);
    let failed = |op: &str, e: std::io::Error| {
        format!(
            "failed to read metadata from {} - {}",
            file.display(),
            super::go_error::path_error(op, &file, &e)
        )
    };
    let mut f = match std::fs::File::open(&file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed("open", e)),
    };
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut text).map_err(|e| failed("read", e))?;
    Metadata::parse_bytes(&text)
        .map(Some)
        .map_err(|e| format!("failed to parse metadata in {} - {e}", file.display()))
}

/// Writes nsqd.dat as nsqd does: `nsqd.dat.<rand>.tmp` (0600), fsync, rename over the file.
pub fn save(data_path: &Path, meta: &Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = path(data_path);
    let tmp = data_path.join(format!("{FILE_NAME}.{}.tmp", rand::random::<u32>()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(meta.encode().as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &file)
}

/// Whether `name` is a temporary sibling nsqd (or we) write before renaming it over
/// nsqd.dat or a disk queue's meta file: `<file>.<random digits>.tmp`.
fn is_meta_temp(name: &str) -> bool {
    let Some(rest) = name.strip_suffix(".tmp") else {
        return false;
    };
    let Some((file, digits)) = rest.rsplit_once('.') else {
        return false;
    };
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (file == FILE_NAME || file.ends_with(".diskqueue.meta.dat"))
}

/// Removes the temporary files a process stopped mid-write left in `data_path` (a kill -9, or
/// a second stop signal, between writing one and renaming it). Call with the data path locked:
/// no other process writes them then. Returns how many went.
pub fn remove_stale_temps(data_path: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(data_path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_meta_temp))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_meta_temporaries_are_stale() {
        assert!(is_meta_temp("nsqd.dat.1234.tmp"));
        assert!(is_meta_temp("t:c.diskqueue.meta.dat.3849560774.tmp"));
        assert!(!is_meta_temp("nsqd.dat"));
        assert!(!is_meta_temp("t.diskqueue.000000.dat"));
        assert!(!is_meta_temp("nsqd.dat.tmp"));
        assert!(!is_meta_temp("nsqd.dat.12a.tmp"));
        assert!(!is_meta_temp("notes.1.tmp"));
    }

    const NSQD_V13: &str = r#"{"topics":[{"name":"t1","paused":false,"channels":[{"name":"c1","paused":true}]}],"version":"1.3.0"}"#;

    #[test]
    fn encodes_byte_for_byte_like_nsqd() {
        let m = Metadata {
            topics: vec![TopicMeta {
                name: "t1".into(),
                paused: false,
                channels: vec![ChannelMeta {
                    name: "c1".into(),
                    paused: true,
                }],
            }],
            version: "1.3.0".into(),
        };
        assert_eq!(m.encode(), NSQD_V13);
        assert_eq!(Metadata::parse(NSQD_V13).unwrap(), m);
    }

    #[test]
    fn empty_lists_are_null() {
        let m = Metadata {
            topics: vec![],
            version: "1.3.0".into(),
        };
        assert_eq!(m.encode(), r#"{"topics":null,"version":"1.3.0"}"#);
        let t = Metadata {
            topics: vec![TopicMeta {
                name: "a".into(),
                paused: true,
                channels: vec![],
            }],
            version: "1.3.0".into(),
        };
        assert_eq!(
            t.encode(),
            r#"{"topics":[{"name":"a","paused":true,"channels":null}],"version":"1.3.0"}"#
        );
    }

    #[test]
    fn reads_v1_1_key_order_and_empty_arrays() {
        let v11 = r#"{"topics":[{"channels":[],"name":"a","paused":true},{"channels":[{"name":"x","paused":false}],"name":"b","paused":false}],"version":"1.1.0"}"#;
        let m = Metadata::parse(v11).unwrap();
        assert_eq!(m.topics.len(), 2);
        assert!(m.topics[0].paused && m.topics[0].channels.is_empty());
        assert_eq!(m.topics[1].channels[0].name, "x");
        assert!(
            Metadata::parse(r#"{"topics":null,"version":"1.3.0"}"#)
                .unwrap()
                .topics
                .is_empty()
        );
    }

    #[test]
    fn skips_invalid_names() {
        let m = Metadata::parse(
            r#"{"topics":[{"name":"../../etc/x","paused":false,"channels":null},{"name":"ok","paused":false,"channels":[{"name":"a/b","paused":false},{"name":"c","paused":true}]}],"version":"1.3.0"}"#,
        )
        .unwrap();
        assert_eq!(m.topics.len(), 1);
        assert_eq!(m.topics[0].name, "ok");
        assert_eq!(m.topics[0].channels.len(), 1);
        assert_eq!(m.topics[0].channels[0].name, "c");
    }

    #[test]
    fn drops_ephemeral_and_rejects_garbage() {
        let m = Metadata::parse(
            r#"{"topics":[{"name":"e#ephemeral","paused":false,"channels":null},{"name":"t","paused":false,"channels":[{"name":"c#ephemeral","paused":false}]}],"version":"1.3.0"}"#,
        )
        .unwrap();
        assert_eq!(m.topics.len(), 1);
        assert!(m.topics[0].channels.is_empty());
        assert!(Metadata::parse("{not json").is_err());
        // A name that is not UTF-8 is skipped like any invalid name, as nsqd does.
        let m = Metadata::parse_bytes(b"{\"topics\":[{\"name\":\"k\xff\"},{\"name\":\"ok\"}]}")
            .unwrap();
        let names: Vec<_> = m.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["ok"]);
    }

    #[test]
    fn save_then_load_in_a_temp_dir() {
        let dir = std::env::temp_dir().join(format!("nsqd-meta-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir), Ok(None));
        let m = Metadata::parse(NSQD_V13).unwrap();
        save(&dir, &m).unwrap();
        assert_eq!(std::fs::read_to_string(path(&dir)).unwrap(), NSQD_V13);
        assert_eq!(load(&dir), Ok(Some(m)));
        std::fs::write(path(&dir), "garbage").unwrap();
        assert!(
            load(&dir)
                .unwrap_err()
                .starts_with("failed to parse metadata in ")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn decodes_as_go_does() {
        let names = |m: Metadata| -> Vec<(String, bool, Vec<String>)> {
            m.topics
                .into_iter()
                .map(|t| {
                    (
                        t.name,
                        t.paused,
                        t.channels.into_iter().map(|c| c.name).collect(),
                    )
                })
                .collect()
        };
        // Keys in any letter case; unknown keys ignored; null leaves the zero value.
        let caps = r#"{"Topics":[{"NAME":"t","Paused":true,"Channels":[{"Name":"c","x":1}]}],"Version":null}"#;
        let want = vec![("t".to_string(), true, vec!["c".to_string()])];
        assert_eq!(names(Metadata::parse(caps).unwrap()), want);
        // A whole-file null, a topic without a name, null elements: skipped, not fatal.
        assert_eq!(Metadata::parse("null").unwrap(), Metadata::default());
        let unnamed = r#"{"topics":[{"paused":true},null,{"name":"t","channels":[null]}]}"#;
        assert_eq!(
            names(Metadata::parse(unnamed).unwrap()),
            [("t".into(), false, vec![])]
        );
        // Wrong types are errors in Go's words.
        for (text, err) in [
            (
                "[]",
                "json: cannot unmarshal array into Go value of type nsqd.Metadata",
            ),
            (
                r#"{"topics":{}}"#,
                "json: cannot unmarshal object into Go struct field Metadata.topics of type []nsqd.TopicMetadata",
            ),
            (
                r#"{"topics":[{"name":"t","paused":"yes"}]}"#,
                "json: cannot unmarshal string into Go struct field TopicMetadata.topics.paused of type bool",
            ),
            (
                r#"{"topics":[{"name":"t","channels":[{"name":5}]}]}"#,
                "json: cannot unmarshal number into Go struct field ChannelMetadata.topics.channels.name of type string",
            ),
            (
                r#"{"version":1}"#,
                "json: cannot unmarshal number into Go struct field Metadata.version of type string",
            ),
        ] {
            assert_eq!(Metadata::parse(text).unwrap_err(), err, "{text}");
        }
    }
}
