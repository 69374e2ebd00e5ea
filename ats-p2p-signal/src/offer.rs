//! The ats-p2p offer (task payload v1) and accept message, shared by sender and receiver.
//!
//! Everything here validates untrusted input from ATS: a missing or malformed field is an
//! [`OfferError`], never a panic. Unknown payload fields are ignored (forward compatibility).

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value, json};

use crate::manifest::{Manifest, ManifestError};
use crate::types::{Message, NewTask, Task};

/// Task type of an offer.
pub const OFFER_TASK_TYPE: &str = "file_offer";

/// Channel offers go to unless told otherwise.
pub use crate::defaults::OFFER_CHANNEL as DEFAULT_OFFER_CHANNEL;

/// Payload and accept-message version this code speaks.
pub const OFFER_VERSION: u64 = 1;

/// Longest accepted file name in bytes (common file system limit).
pub const MAX_FILENAME_BYTES: usize = 255;

/// Longest accepted actor id in an offer, in bytes (ids are short; this stops abuse).
pub const MAX_ACTOR_ID_BYTES: usize = 256;

/// Why an offer or accept message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// The task is not of type `file_offer`.
    #[error("task type is {0:?}, not \"file_offer\"")]
    NotAnOffer(String),
    /// The payload or message is not a JSON object.
    #[error("{0} is not a JSON object")]
    NotAnObject(&'static str),
    /// The version is missing or not one we speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field is present but malformed.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// The field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The message carries no accept (no text part with `"p2p":"accept"`).
    #[error("message is not an ats-p2p accept")]
    NotAnAccept,
    /// A directory offer's manifest is malformed or unsafe.
    #[error("invalid manifest: {0}")]
    Manifest(#[from] ManifestError),
}

/// A transfer id: 16 random bytes, shown as 32 lower-case hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId([u8; 16]);

impl TransferId {
    /// A fresh random id (OS randomness).
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        Self(b)
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes (the topic is derived from these).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransferId({self})")
    }
}

impl FromStr for TransferId {
    type Err = OfferError;

    /// Parses exactly 32 hex characters (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<16>(s, "transfer_id").map(Self)
    }
}

/// Parses exactly `N` bytes of hex (`2N` characters).
fn parse_hex<const N: usize>(s: &str, field: &'static str) -> Result<[u8; N], OfferError> {
    let want = N.saturating_mul(2);
    if s.len() != want {
        return Err(OfferError::InvalidField {
            field,
            reason: format!("expected {want} hex characters, got {}", s.len()),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| OfferError::InvalidField {
        field,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Parses a 32-byte key or hash given as 64 hex characters.
pub fn parse_key_hex(s: &str) -> Result<[u8; 32], OfferError> {
    parse_hex::<32>(s, "key")
}

/// A file offer: the payload of a `file_offer` task, version 1.
///
/// A **directory** offer (`"kind":"directory"`) carries a [`Manifest`]: `filename` names the
/// directory, `size` is the sum of its files' sizes and `sha256` is [`Manifest::digest`]; the
/// files' bytes travel one after another in manifest order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOffer {
    /// The transfer id.
    pub transfer_id: TransferId,
    /// The file's (or directory's) name (one path component; validated).
    pub filename: String,
    /// Size in bytes (a directory: of all its files).
    pub size: u64,
    /// SHA-256 of the content (a directory: of its manifest).
    pub sha256: [u8; 32],
    /// ATS actor id of the sender.
    pub sender_id: String,
    /// ATS actor id of the intended receiver.
    pub recipient_id: String,
    /// The sender's Hyperswarm (Ed25519) public key.
    pub sender_key: [u8; 32],
    /// `Some` for a directory offer: its files and directories.
    pub manifest: Option<Manifest>,
}

/// The payload's `kind` of a directory offer (absent: a file).
pub const DIRECTORY_KIND: &str = "directory";

fn field<'a>(obj: &'a Map<String, Value>, name: &'static str) -> Result<&'a Value, OfferError> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(OfferError::MissingField(name)),
        Some(v) => Ok(v),
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, OfferError> {
    field(obj, name)?
        .as_str()
        .ok_or_else(|| OfferError::InvalidField {
            field: name,
            reason: "not a string".to_owned(),
        })
}

fn hex_field<const N: usize>(
    obj: &Map<String, Value>,
    name: &'static str,
) -> Result<[u8; N], OfferError> {
    parse_hex::<N>(str_field(obj, name)?, name)
}

fn check_version(obj: &Map<String, Value>) -> Result<(), OfferError> {
    let v = field(obj, "v")?;
    match v.as_u64() {
        Some(OFFER_VERSION) => Ok(()),
        _ => Err(OfferError::UnsupportedVersion(v.to_string())),
    }
}

fn actor_id_field(obj: &Map<String, Value>, name: &'static str) -> Result<String, OfferError> {
    let s = str_field(obj, name)?;
    if s.is_empty() || s.len() > MAX_ACTOR_ID_BYTES {
        return Err(OfferError::InvalidField {
            field: name,
            reason: format!("must be 1 to {MAX_ACTOR_ID_BYTES} bytes"),
        });
    }
    Ok(s.to_owned())
}

/// Checks that `name` is one safe path component.
pub fn validate_filename(name: &str) -> Result<(), OfferError> {
    let bad = |reason: &str| OfferError::InvalidField {
        field: "filename",
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_FILENAME_BYTES {
        return Err(bad("too long"));
    }
    if name == "." || name == ".." {
        return Err(bad("not a file name"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(bad("contains a path separator or control character"));
    }
    Ok(())
}

impl FileOffer {
    /// The v1 payload object (with `"kind":"directory"` and `"manifest"` for a directory).
    pub fn to_payload(&self) -> Value {
        let mut payload = json!({
            "v": OFFER_VERSION,
            "transfer_id": self.transfer_id.to_string(),
            "filename": self.filename,
            "size": self.size,
            "sha256": hex::encode(self.sha256),
            "sender_id": self.sender_id,
            "recipient_id": self.recipient_id,
            "sender_key": hex::encode(self.sender_key),
        });
        if let (Some(manifest), Some(obj)) = (&self.manifest, payload.as_object_mut()) {
            obj.insert("kind".into(), Value::from(DIRECTORY_KIND));
            obj.insert("manifest".into(), manifest.to_json());
        }
        payload
    }

    /// Whether this offers a directory.
    pub fn is_directory(&self) -> bool {
        self.manifest.is_some()
    }

    /// Parses and validates a v1 payload (unknown fields ignored).
    pub fn from_payload(payload: &Value) -> Result<Self, OfferError> {
        let obj = payload
            .as_object()
            .ok_or(OfferError::NotAnObject("payload"))?;
        check_version(obj)?;
        let transfer_id = TransferId(hex_field::<16>(obj, "transfer_id")?);
        let filename = str_field(obj, "filename")?.to_owned();
        validate_filename(&filename)?;
        let size = field(obj, "size")?
            .as_u64()
            .ok_or_else(|| OfferError::InvalidField {
                field: "size",
                reason: "not a non-negative integer".to_owned(),
            })?;
        let sha256 = hex_field::<32>(obj, "sha256")?;
        let manifest = match obj.get("kind") {
            None | Some(Value::Null) => None,
            Some(kind) if kind.as_str() == Some(DIRECTORY_KIND) => {
                let manifest = Manifest::from_json(field(obj, "manifest")?)?;
                check_manifest_sums(&manifest, size, sha256)?;
                Some(manifest)
            }
            Some(kind) => {
                return Err(OfferError::InvalidField {
                    field: "kind",
                    reason: format!("unknown kind {kind}"),
                });
            }
        };
        Ok(Self {
            transfer_id,
            filename,
            size,
            sha256,
            sender_id: actor_id_field(obj, "sender_id")?,
            recipient_id: actor_id_field(obj, "recipient_id")?,
            sender_key: hex_field::<32>(obj, "sender_key")?,
            manifest,
        })
    }

    /// Parses the offer out of a task (checks the type first).
    pub fn from_task(task: &Task) -> Result<Self, OfferError> {
        if task.task_type != OFFER_TASK_TYPE {
            return Err(OfferError::NotAnOffer(task.task_type.clone()));
        }
        Self::from_payload(&task.payload)
    }

    /// The human title: names the file, the recipient and the transfer id (so the list
    /// `search` parameter finds the task by transfer id).
    pub fn title(&self) -> String {
        format!(
            "P2P file offer: {} to {} [{}]",
            self.filename, self.recipient_id, self.transfer_id
        )
    }

    /// The create request for this offer (`channel`: `None` means [`DEFAULT_OFFER_CHANNEL`]).
    pub fn to_new_task(&self, channel: Option<&str>) -> NewTask {
        NewTask {
            title: self.title(),
            task_type: Some(OFFER_TASK_TYPE.to_owned()),
            channel: Some(channel.unwrap_or(DEFAULT_OFFER_CHANNEL).to_owned()),
            priority: None,
            description: Some(format!(
                "{} offers {} ({} bytes, sha256 {}) to {} peer to peer. \
                 Transfer {}; accept with ats-p2p.",
                self.sender_id,
                self.filename,
                self.size,
                hex::encode(self.sha256),
                self.recipient_id,
                self.transfer_id
            )),
            payload: Some(self.to_payload()),
        }
    }
}

/// A directory offer's `size` and `sha256` must be its manifest's total and digest.
fn check_manifest_sums(manifest: &Manifest, size: u64, sha256: [u8; 32]) -> Result<(), OfferError> {
    if manifest.total_size()? != size {
        return Err(OfferError::InvalidField {
            field: "size",
            reason: "not the sum of the manifest's file sizes".to_owned(),
        });
    }
    if manifest.digest() != sha256 {
        return Err(OfferError::InvalidField {
            field: "sha256",
            reason: "not the digest of the manifest".to_owned(),
        });
    }
    Ok(())
}

/// The receiver's accept, posted as one text part on the offer task after claiming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptMessage {
    /// The transfer being accepted.
    pub transfer_id: TransferId,
    /// The receiver's Hyperswarm (Ed25519) public key.
    pub receiver_key: [u8; 32],
    /// The receiver can resume a broken transfer (the frame protocol's resume extension): the
    /// sender may offer it in META. Written as `"resume":true` only when set; a reader that
    /// does not know the field ignores it, and its absence means `false`.
    pub resume: bool,
    /// The receiver can take directory offers (`"dirs":true`; absent means `false`, and a
    /// sender then fails a directory offer instead of streaming it).
    pub directories: bool,
}

impl AcceptMessage {
    /// The JSON text content:
    /// `{"p2p":"accept","v":1,"transfer_id":"…","receiver_key":"<64 hex>"}`, plus
    /// `"resume":true` when the receiver can resume and `"dirs":true` when it takes directories.
    pub fn to_content(&self) -> String {
        let mut content = json!({
            "p2p": "accept",
            "v": OFFER_VERSION,
            "transfer_id": self.transfer_id.to_string(),
            "receiver_key": hex::encode(self.receiver_key),
        });
        if let Some(obj) = content.as_object_mut() {
            if self.resume {
                obj.insert("resume".into(), Value::Bool(true));
            }
            if self.directories {
                obj.insert("dirs".into(), Value::Bool(true));
            }
        }
        content.to_string()
    }

    /// Parses a text part's content.
    pub fn parse(content: &str) -> Result<Self, OfferError> {
        let v: Value = serde_json::from_str(content).map_err(|_| OfferError::NotAnAccept)?;
        let obj = v.as_object().ok_or(OfferError::NotAnAccept)?;
        if obj.get("p2p").and_then(Value::as_str) != Some("accept") {
            return Err(OfferError::NotAnAccept);
        }
        check_version(obj)?;
        Ok(Self {
            transfer_id: TransferId(hex_field::<16>(obj, "transfer_id")?),
            receiver_key: hex_field::<32>(obj, "receiver_key")?,
            resume: obj.get("resume").and_then(Value::as_bool).unwrap_or(false),
            directories: obj.get("dirs").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// The first accept in a message's text parts. A part that claims to be an accept but is
    /// malformed is an error; a message without any accept is [`OfferError::NotAnAccept`].
    pub fn from_message(message: &Message) -> Result<Self, OfferError> {
        for part in &message.parts {
            if part.part_type != "text" {
                continue;
            }
            let Some(content) = &part.content else {
                continue;
            };
            match Self::parse(content) {
                Err(OfferError::NotAnAccept) => continue,
                other => return other,
            }
        }
        Err(OfferError::NotAnAccept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> FileOffer {
        FileOffer {
            transfer_id: TransferId::from_bytes([0xab; 16]),
            filename: "data.csv".into(),
            size: 1_048_576,
            sha256: [1; 32],
            sender_id: "agent-a".into(),
            recipient_id: "agent-b".into(),
            sender_key: [2; 32],
            manifest: None,
        }
    }

    #[test]
    fn transfer_id_roundtrip() {
        let id = TransferId::random();
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.parse::<TransferId>().unwrap(), id);
        assert_eq!(s.to_uppercase().parse::<TransferId>().unwrap(), id);
        assert_ne!(TransferId::random(), id);
        for bad in ["", "abc", &"g".repeat(32), &"a".repeat(33), "é"] {
            assert!(bad.parse::<TransferId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn payload_roundtrip_and_extra_fields() {
        let o = offer();
        let mut p = o.to_payload();
        assert_eq!(p["v"], 1);
        assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
        p["future_field"] = json!({"x": 1});
        assert_eq!(FileOffer::from_payload(&p).unwrap(), o);
        let t = o.to_new_task(None);
        assert_eq!(t.task_type.as_deref(), Some("file_offer"));
        assert_eq!(t.channel.as_deref(), Some("p2p-transfer"));
        assert!(t.title.contains(&o.transfer_id.to_string()));
        assert_eq!(o.to_new_task(Some("c")).channel.as_deref(), Some("c"));
    }

    #[test]
    fn malformed_payloads_are_typed_errors() {
        let good = offer().to_payload();
        for key in [
            "v",
            "transfer_id",
            "filename",
            "size",
            "sha256",
            "sender_id",
            "recipient_id",
            "sender_key",
        ] {
            let mut p = good.clone();
            p.as_object_mut().unwrap().remove(key);
            let e = FileOffer::from_payload(&p).unwrap_err();
            assert!(
                matches!(e, OfferError::MissingField(k) if k == key),
                "{key}: {e:?}"
            );
        }
        let cases = [
            ("v", json!(2)),
            ("v", json!("1")),
            ("size", json!(-1)),
            ("size", json!(1.5)),
            ("size", json!("10")),
            ("sha256", json!("00")),
            ("sha256", json!("zz".repeat(32))),
            ("sender_key", json!(12)),
            ("transfer_id", json!("ab".repeat(17))),
            ("filename", json!("../etc/passwd")),
            ("filename", json!("..")),
            ("filename", json!("")),
            ("filename", json!("a\\b")),
            ("filename", json!("x".repeat(256))),
            ("sender_id", json!("")),
            ("recipient_id", json!([])),
        ];
        for (key, val) in cases {
            let mut p = good.clone();
            p[key] = val.clone();
            assert!(FileOffer::from_payload(&p).is_err(), "{key}={val}");
        }
        assert_eq!(
            FileOffer::from_payload(&json!([])),
            Err(OfferError::NotAnObject("payload"))
        );
        assert!(FileOffer::from_payload(&Value::Null).is_err());
    }

    fn directory_offer() -> FileOffer {
        use crate::manifest::ManifestFile;
        let manifest = Manifest {
            dirs: vec!["sub".into(), "empty".into()],
            files: vec![
                ManifestFile {
                    path: "sub/a.txt".into(),
                    size: 5,
                    sha256: [3; 32],
                },
                ManifestFile {
                    path: "b.bin".into(),
                    size: 7,
                    sha256: [4; 32],
                },
            ],
        };
        FileOffer {
            filename: "project".into(),
            size: 12,
            sha256: manifest.digest(),
            manifest: Some(manifest),
            ..offer()
        }
    }

    #[test]
    fn directory_offers_roundtrip_and_check_their_sums() {
        let o = directory_offer();
        let p = o.to_payload();
        assert_eq!(p["kind"], "directory");
        assert_eq!(FileOffer::from_payload(&p).unwrap(), o);
        assert!(o.is_directory() && !offer().is_directory());
        assert!(
            offer().to_payload().get("kind").is_none(),
            "a file offer stays seed-shaped"
        );

        let mut wrong_size = p.clone();
        wrong_size["size"] = json!(13);
        assert!(FileOffer::from_payload(&wrong_size).is_err());
        let mut wrong_digest = p.clone();
        wrong_digest["sha256"] = json!("00".repeat(32));
        assert!(FileOffer::from_payload(&wrong_digest).is_err());
        let mut no_manifest = p.clone();
        no_manifest.as_object_mut().unwrap().remove("manifest");
        assert_eq!(
            FileOffer::from_payload(&no_manifest),
            Err(OfferError::MissingField("manifest"))
        );
        let mut odd_kind = p.clone();
        odd_kind["kind"] = json!("tarball");
        assert!(FileOffer::from_payload(&odd_kind).is_err());
        let mut escaping = p;
        escaping["manifest"]["files"][0]["path"] = json!("../x");
        assert!(matches!(
            FileOffer::from_payload(&escaping),
            Err(OfferError::Manifest(ManifestError::UnsafePath { .. }))
        ));
    }

    #[test]
    fn accept_roundtrip() {
        let a = AcceptMessage {
            transfer_id: TransferId::random(),
            receiver_key: [9; 32],
            resume: false,
            directories: false,
        };
        let c = a.to_content();
        let v: Value = serde_json::from_str(&c).unwrap();
        assert_eq!(v["p2p"], "accept");
        assert_eq!(v["v"], 1);
        assert_eq!(AcceptMessage::parse(&c).unwrap(), a);
        assert!(
            v.get("resume").is_none(),
            "a seed reader sees the seed message"
        );
        let r = AcceptMessage { resume: true, ..a };
        let c = r.to_content();
        assert_eq!(AcceptMessage::parse(&c).unwrap(), r);
        let d = AcceptMessage {
            directories: true,
            ..a
        };
        assert_eq!(AcceptMessage::parse(&d.to_content()).unwrap(), d);
        assert!(!AcceptMessage::parse(&c).unwrap().directories);
        assert_eq!(AcceptMessage::parse("hello"), Err(OfferError::NotAnAccept));
        assert_eq!(
            AcceptMessage::parse(r#"{"p2p":"nope"}"#),
            Err(OfferError::NotAnAccept)
        );
        let bad = r#"{"p2p":"accept","v":1,"transfer_id":"00","receiver_key":"00"}"#;
        assert!(matches!(
            AcceptMessage::parse(bad),
            Err(OfferError::InvalidField { .. })
        ));
    }
}
