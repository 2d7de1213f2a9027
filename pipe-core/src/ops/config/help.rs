//! `--help` notes of each flag's environment variable and default, written
//! from the key table and the defaults layer that resolution itself uses, so
//! they cannot drift from what the node does. (Why not clap's own `env`:
//! see the module doc of `config`.)

use clap::Arg;
use figment::value::Dict;

use super::keys::{COMMON_KEYS, Env, Key, keys};
use super::value::Text;
use super::{Profile, defaults};
use crate::wire::Side;

/// Adds `[env: NAME] [default: VALUE]` to the help of each flag that is a
/// key of a node on `side` (either node's, when `None`), and to `--config`
/// the keys both nodes share that are not among `common_flags`.
pub(super) fn notes(side: Option<Side>, common_flags: &clap::Command) -> impl FnMut(Arg) -> Arg {
    let sides = match side {
        Some(side) => vec![side],
        None => vec![Side::Server, Side::Client],
    };
    let defaults: Vec<[Dict; 3]> = sides.iter().map(|side| profile_defaults(*side)).collect();
    let table = keys(sides[0]);
    let without_flags = without_flags(side, common_flags);
    move |arg| {
        if arg.get_id() == "config" {
            return append(arg, &without_flags);
        }
        let Some(key) = table.iter().find(|key| arg.get_id() == key.name) else {
            return arg;
        };
        let mut notes = vec![format!("[env: {}]", env_note(key, side))];
        if let Some(default) = default_note(key.name, &defaults) {
            notes.push(format!("[default: {default}]"));
        }
        append(arg, &notes.join(" "))
    }
}

/// The shared keys that no flag sets (the identity's file names), with
/// their variables.
fn without_flags(side: Option<Side>, common_flags: &clap::Command) -> String {
    let keys: Vec<String> = COMMON_KEYS
        .iter()
        .filter(|key| {
            !common_flags
                .get_arguments()
                .any(|arg| arg.get_id() == key.name)
        })
        .map(|key| format!("{} (env {})", key.name, env_note(key, side)))
        .collect();
    format!("[keys without a flag: {}]", keys.join(", "))
}

/// The defaults of a node on `side` without a profile, in dev and in prod.
fn profile_defaults(side: Side) -> [Dict; 3] {
    [None, Some(Profile::Dev), Some(Profile::Prod)].map(|profile| {
        defaults::layer(side, profile)
            .map(|layer| layer.values().clone())
            .unwrap_or_default()
    })
}

/// The variables that set `key`, as the README writes them.
fn env_note(key: &Key, side: Option<Side>) -> String {
    match (key.env, side) {
        (Env::PerSide(server, client), None) => format!("{server} / {client}"),
        (Env::Split { host, port }, _) => {
            format!("{} + {}", alternatives(host), alternatives(port))
        }
        (env, side) => env
            .name(side.unwrap_or(Side::Server))
            .unwrap_or_default()
            .to_owned(),
    }
}

/// `A (or B)`.
fn alternatives(names: &[&str]) -> String {
    match names {
        [first, rest @ ..] if !rest.is_empty() => format!("{first} (or {})", rest.join(", ")),
        _ => names.join(", "),
    }
}

/// `key`'s default, with the profiles that change it: `human; prod: json`.
fn default_note(key: &str, defaults: &[[Dict; 3]]) -> Option<String> {
    let mut per_side: Vec<String> = Vec::new();
    for [plain, dev, prod] in defaults {
        let text = |dict: &Dict| {
            let text = dict.get(key)?.deserialize::<Text>().ok()?.joined();
            Some(if text.is_empty() {
                "none".to_owned()
            } else {
                text
            })
        };
        let plain = text(plain)?;
        let (dev, prod) = (text(dev), text(prod));
        let mut note = plain.clone();
        if dev == prod && dev.as_ref() != Some(&plain) {
            note += &format!("; dev, prod: {}", dev.unwrap_or_default());
        } else {
            for (name, value) in [("dev", dev), ("prod", prod)] {
                if let Some(value) = value.filter(|value| *value != plain) {
                    note += &format!("; {name}: {value}");
                }
            }
        }
        if !per_side.contains(&note) {
            per_side.push(note);
        }
    }
    (!per_side.is_empty()).then(|| per_side.join(" / "))
}

/// `arg` with `notes` after its short and long help.
fn append(arg: Arg, notes: &str) -> Arg {
    let help = arg.get_help().map(|help| format!("{help} {notes}"));
    let long_help = arg.get_long_help().map(|help| format!("{help} {notes}"));
    let arg = match help {
        Some(help) => arg.help(help),
        None => arg.help(notes.to_owned()),
    };
    match long_help {
        Some(long_help) => arg.long_help(long_help),
        None => arg,
    }
}

#[cfg(test)]
mod tests {
    use clap::Args;

    use crate::ops::config::{ClientArgs, ServerArgs};

    fn help(command: &clap::Command, flag: &str) -> String {
        command
            .get_arguments()
            .find(|arg| arg.get_id() == flag)
            .and_then(|arg| arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    #[test]
    fn notes_come_from_the_key_table_and_the_defaults() {
        let server = ServerArgs::augment_args(clap::Command::new("serve"));
        let client = ClientArgs::augment_args(clap::Command::new("serve"));
        // (command, flag, what its help ends with)
        let cases = [
            (
                &server,
                "http",
                "[env: RP_SERVER_HTTP] [default: 127.0.0.1:8080; dev: unix:/tmp/rpserver.sock; prod: unix:/run/restpipe/rpserver.sock]",
            ),
            (
                &client,
                "http",
                "[env: RP_CLIENT_HTTP] [default: 127.0.0.1:8081; dev: unix:/tmp/rpclient.sock; prod: unix:/run/restpipe/rpclient.sock]",
            ),
            (
                &server,
                "listen",
                "[env: RP_SERVER_BIND_INTERFACE (or BIND_IP) + RP_SERVER_BIND_PORT (or BIND_PORT)] \
                 [default: 0.0.0.0:1234]",
            ),
            (&server, "debug", "[env: DEBUG] [default: off; dev: on]"),
            (&server, "log_format", "[default: human; prod: json]"),
            (&server, "socket_mode", "[default: 0660; dev: 0666]"),
            (
                &client,
                "reconnect_min",
                "[env: RP_RECONNECT_MIN] [default: 0.5]",
            ),
            (&server, "policy", "[env: RP_POLICY]"),
            (&client, "api_tokens", "[env: RP_API_TOKENS]"),
            (&client, "crl", "[env: RP_CRL]"),
            (
                &server,
                "config",
                "ca_crt_filename (env RP_CA_CRT_FILENAME)]",
            ),
        ];
        for (command, flag, note) in cases {
            let help = help(command, flag);
            assert!(help.ends_with(note), "--{flag}: {help}");
        }
    }
}
