//! One layer of configuration: a figment provider whose metadata names it
//! (`--flag`, an environment variable, the file, the defaults), and reading
//! back from the merged figment where each value came from.

use std::path::Path;

use figment::value::{Dict, Empty, Map, Value};
use figment::{Figment, Metadata, Provider, Source};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ConfigError;
use super::value::Text;
use crate::node::hide_credentials;

/// The flags layer's name in figment's metadata.
pub(super) const FLAGS: &str = "command line";
/// Each environment variable's layer name; the variable is its source.
const ENVIRONMENT: &str = "environment";
/// The file layer's name; the file is its source.
const FILE: &str = "config file";
/// The defaults layer's name.
pub(super) const DEFAULTS: &str = "built-in default";

/// One layer's values, under a name that errors can quote.
pub(super) struct Layer {
    metadata: Metadata,
    values: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<figment::Profile, Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.values.clone()))
    }
}

impl Layer {
    /// `value`'s fields as a layer called `name`. A field that is `None` (a
    /// flag not given) is left out, so that it cannot hide a lower layer's.
    pub(super) fn serialized(
        name: &'static str,
        value: &impl Serialize,
    ) -> Result<Self, ConfigError> {
        let mut values = Value::serialize(value)
            .map_err(|e| ConfigError::bad_value(name, e.to_string()))?
            .into_dict()
            .ok_or_else(|| ConfigError::bad_value(name, "not a table of options"))?;
        values.retain(|_, value| !matches!(value, Value::Empty(..)));
        Ok(Self {
            metadata: Metadata::named(name),
            values,
        })
    }

    /// Adds `other`'s values to this layer's.
    pub(super) fn absorb(&mut self, other: Layer) {
        self.values.extend(other.values);
    }

    /// Whether this layer sets `key`.
    pub(super) fn sets(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// The values of this layer, for `--help`.
    pub(super) fn values(&self) -> &Dict {
        &self.values
    }

    /// The TOML file at `path`.
    pub(super) fn file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        let values: Dict = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim().to_owned(),
        })?;
        Ok(Self {
            metadata: Metadata::from(FILE, path),
            values,
        })
    }

    /// The environment variable `name`, whose value sets `key`.
    pub(super) fn variable(key: &str, name: &str, value: String) -> Self {
        Self {
            metadata: Metadata::from(ENVIRONMENT, Source::Custom(name.to_owned())),
            values: Dict::from([(key.to_owned(), Value::from(value))]),
        }
    }

    /// Checks the file's keys alone, before any value is read (a value that
    /// another layer overrides is never parsed): with every value blanked,
    /// the raw struct's `deny_unknown_fields` names the first unknown key.
    pub(super) fn check_keys<Raw: DeserializeOwned>(&self, path: &Path) -> Result<(), ConfigError> {
        let blank = Self {
            metadata: self.metadata.clone(),
            values: self
                .values
                .keys()
                .map(|key| (key.clone(), Value::from(Empty::None)))
                .collect(),
        };
        let figment = Figment::from(blank);
        match figment.extract::<Raw>() {
            Ok(_) => Ok(()),
            Err(error) => match error.kind {
                figment::error::Kind::UnknownField(key, expected) => {
                    let mut known = expected.to_vec();
                    known.sort_unstable();
                    Err(ConfigError::UnknownKey {
                        path: path.to_owned(),
                        key,
                        known: known.join(", "),
                    })
                }
                _ => Err(ConfigError::bad_value(
                    format!("config file {}", path.display()),
                    error.kind.to_string(),
                )),
            },
        }
    }
}

/// Reads a figment's values and says where each came from.
pub(super) struct Provenance<'a> {
    figment: &'a Figment,
    flags: &'a clap::Command,
}

impl<'a> Provenance<'a> {
    pub(super) fn new(figment: &'a Figment, flags: &'a clap::Command) -> Self {
        Self { figment, flags }
    }

    /// The merged values as `T`; a value it cannot use is an error that
    /// says where the value came from.
    pub(super) fn extract<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        self.figment.extract().map_err(|e| self.error(e))
    }

    /// The value of `key` as `T`.
    pub(super) fn extract_key<T: DeserializeOwned>(&self, key: &str) -> Result<T, ConfigError> {
        self.figment.extract_inner(key).map_err(|e| self.error(e))
    }

    /// Whether the value of `key` came from a flag.
    pub(super) fn is_flag(&self, key: &str) -> bool {
        self.figment
            .find_metadata(key)
            .is_some_and(|metadata| metadata.name == FLAGS)
    }

    /// Where the value of `key` came from, as an error message starts:
    /// `--flag`, `NAME="value"`, `config file F: key = "value"`. A user
    /// and password in a quoted URL, or in the proxy (with or without a
    /// scheme), are hidden.
    pub(super) fn source_name(&self, key: &str) -> String {
        let quoted = self
            .figment
            .find_value(key)
            .ok()
            .and_then(|value| value.deserialize::<Text>().ok())
            .map(|text| text.joined())
            .map(|text| match key == "proxy" || text.contains("://") {
                true => hide_credentials(&text),
                false => text,
            })
            .map(|text| format!("{text:?}"));
        let Some(metadata) = self.figment.find_metadata(key) else {
            return format!("{DEFAULTS} {key}");
        };
        let source = metadata.source.as_ref();
        match (metadata.name.as_ref(), source, quoted) {
            (FLAGS, _, _) => self.flag(key),
            (ENVIRONMENT, Some(Source::Custom(name)), Some(quoted)) => format!("{name}={quoted}"),
            (FILE, Some(Source::File(path)), Some(quoted)) => {
                format!("config file {}: {key} = {quoted}", path.display())
            }
            (FILE, Some(Source::File(path)), None) => {
                format!("config file {}: {key}", path.display())
            }
            (name, _, _) => format!("{name} {key}"),
        }
    }

    /// Where the value of `key` came from, without the value: `--flag`,
    /// `NAME`, `config file F`, or `built-in default`.
    pub(super) fn origin(&self, key: &str) -> String {
        let Some(metadata) = self.figment.find_metadata(key) else {
            return DEFAULTS.to_owned();
        };
        match (metadata.name.as_ref(), metadata.source.as_ref()) {
            (FLAGS, _) => self.flag(key),
            (ENVIRONMENT, Some(Source::Custom(name))) => name.clone(),
            (FILE, Some(Source::File(path))) => format!("config file {}", path.display()),
            (name, _) => name.to_owned(),
        }
    }

    /// The flag that sets `key`, as typed: `--forward` for `forwards`.
    fn flag(&self, key: &str) -> String {
        let long = self
            .flags
            .get_arguments()
            .find(|arg| arg.get_id() == key)
            .and_then(clap::Arg::get_long);
        format!("--{}", long.unwrap_or(key))
    }

    /// A figment error as the error an operator reads.
    fn error(&self, error: figment::Error) -> ConfigError {
        let key = error.path.join(".");
        let source_name = if key.is_empty() {
            error
                .metadata
                .as_ref()
                .map_or_else(|| "configuration".to_owned(), |m| m.name.to_string())
        } else {
            self.source_name(&key)
        };
        ConfigError::bad_value(source_name, error.kind.to_string())
    }
}
