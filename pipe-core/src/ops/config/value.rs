//! One option's value, read alike from every layer.
//!
//! An environment variable is text, a TOML file holds strings, numbers,
//! booleans and lists, and a flag is serialized from its clap type.
//! [`Parsed`] reads any of them as the text an environment variable would
//! hold (a list as its items joined with commas, unless the type wants the
//! items) and parses that with the type's one parser in `parse`, so `2.5` and
//! `"2.5"` mean the same in every layer, as they always have.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::parse::{
    parse_bool, parse_file_name, parse_host_port, parse_host_ports, parse_ip_list,
    parse_log_format, parse_mode, parse_parsed, parse_positive, parse_profile, parse_seconds,
};
use super::{LogFormat, Profile};
use crate::front::{HttpAddr, HttpAddrError};
use crate::node::ProxyUrl;

/// What every option's value must be, in every layer.
const EXPECTED: &str = "a string, number, boolean, or a list of those";

/// A type an option's value can have.
pub(super) trait Setting: Sized {
    /// Parses the text form; the message quotes the text.
    fn parse_text(text: &str) -> Result<Self, String>;

    /// Parses a list (a file's array, a repeated flag); unless the type says
    /// otherwise, as its items joined with commas.
    fn parse_items(items: Vec<String>) -> Result<Self, String> {
        Self::parse_text(&items.join(","))
    }

    /// The text that parses back to this value: defaults and `--help`.
    fn to_text(&self) -> String;
}

/// A value of `T` read from any layer; see the module doc.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Parsed<T>(pub(super) T);

impl<T: Setting> Serialize for Parsed<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_text())
    }
}

impl<'de, T: Setting> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Text::deserialize(deserializer)? {
            Text::One(text) => T::parse_text(&text),
            Text::Items(items) => T::parse_items(items),
        }
        .map(Parsed)
        .map_err(de::Error::custom)
    }
}

/// Serializes a flag's value as the text its [`Setting`] parses back: for
/// clap types without a serde form of that meaning (a `Duration` in seconds).
pub(super) fn as_text<T: Setting, S: Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.serialize_str(&value.to_text()),
        None => serializer.serialize_none(),
    }
}

/// A layer's value as text: one scalar, or a list of scalars.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Text {
    /// A string, or a number or boolean written as text.
    One(String),
    /// A list's items, each as text.
    Items(Vec<String>),
}

impl Text {
    /// As an environment variable would hold it: a list comma-separated.
    pub(super) fn joined(self) -> String {
        match self {
            Self::One(text) => text,
            Self::Items(items) => items.join(","),
        }
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Text, E> {
        Ok(Text::One(value.to_owned()))
    }

    fn visit_char<E: de::Error>(self, value: char) -> Result<Text, E> {
        Ok(Text::One(value.to_string()))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Text, E> {
        Ok(Text::One(value.to_string()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Text, E> {
        Ok(Text::One(value.to_string()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Text, E> {
        Ok(Text::One(value.to_string()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Text, E> {
        Ok(Text::One(value.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Text>()? {
            match item {
                Text::One(text) => items.push(text),
                Text::Items(_) => return Err(de::Error::custom(format!("expected {EXPECTED}"))),
            }
        }
        Ok(Text::Items(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Text, A::Error> {
        Err(de::Error::custom(format!("expected {EXPECTED}")))
    }
}

/// Durations are written in seconds, fractions allowed.
impl Setting for Duration {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_seconds(text)
    }

    fn to_text(&self) -> String {
        self.as_secs_f64().to_string()
    }
}

/// Every count and size is positive.
impl Setting for usize {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_positive(text)
    }

    fn to_text(&self) -> String {
        self.to_string()
    }
}

impl Setting for bool {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_bool(text)
    }

    fn to_text(&self) -> String {
        if *self { "on" } else { "off" }.to_owned()
    }
}

impl Setting for String {
    fn parse_text(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }

    fn to_text(&self) -> String {
        self.clone()
    }
}

impl Setting for PathBuf {
    fn parse_text(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }

    fn to_text(&self) -> String {
        self.display().to_string()
    }
}

impl Setting for SocketAddr {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_parsed(text)
    }

    fn to_text(&self) -> String {
        self.to_string()
    }
}

impl Setting for HttpAddr {
    fn parse_text(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|error: HttpAddrError| error.to_string())
    }

    fn to_text(&self) -> String {
        self.to_string()
    }
}

impl Setting for Profile {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_profile(text)
    }

    fn to_text(&self) -> String {
        match self {
            Self::Dev => "dev",
            Self::Prod => "prod",
        }
        .to_owned()
    }
}

impl Setting for LogFormat {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_log_format(text)
    }

    fn to_text(&self) -> String {
        match self {
            Self::Human => "human",
            Self::Json => "json",
        }
        .to_owned()
    }
}

/// One IP address.
impl Setting for IpAddr {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_parsed(text)
    }

    fn to_text(&self) -> String {
        self.to_string()
    }
}

/// A comma-separated list of IP addresses (a file may give a list).
impl Setting for Vec<IpAddr> {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_ip_list(text)
    }

    fn to_text(&self) -> String {
        let ips: Vec<String> = self.iter().map(IpAddr::to_string).collect();
        ips.join(",")
    }
}

/// Octal permission bits of a unix socket, such as `0660`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mode(pub(super) u32);

impl Setting for Mode {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_mode(text).map(Mode)
    }

    fn to_text(&self) -> String {
        format!("{:04o}", self.0)
    }
}

/// The name of a file inside the cert dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileName(pub(super) String);

impl Setting for FileName {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_file_name(text).map(FileName)
    }

    fn to_text(&self) -> String {
        self.0.clone()
    }
}

/// A server to dial, `HOST:PORT` (`[v6]:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HostPort {
    /// Host name or address, without brackets.
    pub(super) host: String,
    /// Port.
    pub(super) port: u16,
}

impl Setting for HostPort {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_host_port(text).map(|(host, port)| HostPort { host, port })
    }

    fn to_text(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The server nodes to dial, comma-separated (a file may give a list, and
/// `--server` be repeated): one at least.
impl Setting for Vec<HostPort> {
    fn parse_text(text: &str) -> Result<Self, String> {
        let servers = parse_host_ports(text)?;
        Ok(servers
            .into_iter()
            .map(|(host, port)| HostPort { host, port })
            .collect())
    }

    fn to_text(&self) -> String {
        let servers: Vec<String> = self.iter().map(HostPort::to_text).collect();
        servers.join(",")
    }
}

/// The `proxy` key: an HTTP proxy to reach the servers through, or
/// `direct`, which also ignores the conventional proxy variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ProxyChoice {
    /// No proxy, whatever the environment says.
    Direct,
    /// This proxy.
    Through(ProxyUrl),
}

/// The word for [`ProxyChoice::Direct`].
pub(super) const DIRECT: &str = "direct";

/// Parse errors never quote the URL (it may hold a password); neither do
/// the error messages that name where it came from (see `layer`).
impl Setting for ProxyChoice {
    fn parse_text(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case(DIRECT) {
            return Ok(Self::Direct);
        }
        text.parse()
            .map(Self::Through)
            .map_err(|error: crate::node::ProxyUrlError| error.to_string())
    }

    fn to_text(&self) -> String {
        match self {
            Self::Direct => DIRECT.to_owned(),
            Self::Through(proxy) => proxy.expose().to_owned(),
        }
    }
}

/// A list kept as its pieces: which pieces are further split on commas
/// depends on the layer, so validation decides (see `validate::forwards`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pieces(pub(super) Vec<String>);

impl Pieces {
    /// The items of a list key: each flag (`from_flags`) is one; an
    /// environment or file value is a comma-separated list (a file's list
    /// items too).
    pub(super) fn items(self, from_flags: bool) -> Vec<String> {
        if from_flags {
            return self.0;
        }
        self.0
            .iter()
            .flat_map(|piece| piece.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Setting for Pieces {
    fn parse_text(text: &str) -> Result<Self, String> {
        Ok(Pieces(vec![text.to_owned()]))
    }

    fn parse_items(items: Vec<String>) -> Result<Self, String> {
        Ok(Pieces(items))
    }

    fn to_text(&self) -> String {
        self.0.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_help_text_parse_back() {
        for duration in [Duration::from_millis(500), Duration::from_secs(30)] {
            assert_eq!(Duration::parse_text(&duration.to_text()), Ok(duration));
        }
        assert_eq!(Mode::parse_text(&Mode(0o660).to_text()), Ok(Mode(0o660)));
        assert_eq!(bool::parse_text(&false.to_text()), Ok(false));
        let v6 = HostPort {
            host: "::1".to_owned(),
            port: 1234,
        };
        assert_eq!(HostPort::parse_text(&v6.to_text()), Ok(v6));
    }

    #[test]
    fn servers_read_alike_from_a_string_a_list_and_repeated_flags() {
        let expected = Ok(vec![
            HostPort {
                host: "a".to_owned(),
                port: 1,
            },
            HostPort {
                host: "b".to_owned(),
                port: 2,
            },
        ]);
        assert_eq!(Vec::<HostPort>::parse_text("a:1,b:2"), expected);
        let items = vec!["a:1".to_owned(), "b:2".to_owned()];
        assert_eq!(Vec::<HostPort>::parse_items(items), expected);
        assert!(Vec::<HostPort>::parse_items(Vec::new()).is_err());
        let with_v6 = vec![
            HostPort {
                host: "::1".to_owned(),
                port: 3,
            },
            HostPort {
                host: "c".to_owned(),
                port: 4,
            },
        ];
        assert_eq!(Vec::<HostPort>::parse_text(&with_v6.to_text()), Ok(with_v6));
    }
}
