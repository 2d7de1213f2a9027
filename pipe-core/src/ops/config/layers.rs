//! The layers, merged by figment: built-in defaults (some chosen by the
//! launch profile) < TOML file (`--config`) < environment < command-line
//! flags.
//!
//! Each layer is a figment provider whose metadata names it, and figment
//! records which provider gave each value, so an error can say where a value
//! came from: `--flag`, `NAME="value"` or `config file F: key = "value"`.

use std::path::Path;

use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::keys::keys;
use super::layer::{FLAGS, Layer, Provenance};
use super::value::Parsed;
use super::{Lookup, Profile, defaults, legacy};
use crate::wire::Side;

/// Figment over `layers`, lowest first.
fn merged<'a>(layers: impl IntoIterator<Item = &'a Layer>) -> Figment {
    layers.into_iter().fold(Figment::new(), Figment::merge)
}

/// The environment, read through the lookup: one layer per variable that
/// is set, so that an error can name the variable.
fn environment(side: Side, env: Lookup<'_>) -> Vec<Layer> {
    keys(side)
        .iter()
        .filter_map(|key| {
            let name = key.env.name(side)?;
            let value = env(name)?;
            (key.env.keeps_empty() || !value.is_empty())
                .then(|| Layer::variable(key.name, name, value))
        })
        .collect()
}

/// The one key read before the defaults, because it chooses some of them.
#[derive(Deserialize)]
struct ProfileKey {
    profile: Option<Parsed<Profile>>,
}

/// A node's merged layers, and the names of its flags for messages.
pub(super) struct Layers {
    figment: Figment,
    flags: clap::Command,
}

impl Layers {
    /// Gathers the layers of a node on `side` from its flags `args`, the
    /// environment `env` and the file `config`; `Raw` is the node's raw
    /// struct, whose fields are the keys its file may hold.
    pub(super) fn gather<Raw, Args>(
        args: &Args,
        config: Option<&Path>,
        env: Lookup<'_>,
        side: Side,
    ) -> Result<Self, ConfigError>
    where
        Raw: DeserializeOwned,
        Args: Serialize + clap::Args,
    {
        let flag_names = Args::augment_args(clap::Command::new("flags"));
        let file = match config {
            Some(path) => {
                let file = Layer::file(path)?;
                file.check_keys::<Raw>(path)?;
                Some(file)
            }
            None => None,
        };
        let variables = environment(side, env);
        let flags = Layer::serialized(FLAGS, args)?;

        let above_defaults = merged(file.iter().chain(&variables).chain([&flags]));
        let profile = Provenance::new(&above_defaults, &flag_names)
            .extract::<ProfileKey>()?
            .profile
            .map(|profile| profile.0);
        let defaults = defaults::layer(side, profile)?;
        let below_env = merged([&defaults].into_iter().chain(&file));
        let address =
            legacy::address(side, env, &Provenance::new(&below_env, &flag_names), &flags)?;

        let figment = merged(
            [&defaults]
                .into_iter()
                .chain(&file)
                .chain(&variables)
                .chain(&address)
                .chain([&flags]),
        );
        Ok(Self {
            figment,
            flags: flag_names,
        })
    }

    /// Where each value came from.
    pub(super) fn provenance(&self) -> Provenance<'_> {
        Provenance::new(&self.figment, &self.flags)
    }
}
