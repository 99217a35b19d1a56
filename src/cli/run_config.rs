//! `wgformer train --config run.toml` (or `.json`): any of `train`'s options in
//! a file, by their flag names (`d_model = 256` or `"d-model": 256`); a flag
//! given on the command line wins over the file. The options the run resolved
//! to (file, flags and defaults together) are printed at the start and saved
//! in the checkpoint's trainer state.

use serde_json::{Map, Value};
use std::ffi::OsString;
use std::path::Path;
use wgformer::{Error, Result};

/// The command line with the options of `train --config FILE` added where the
/// command line does not give them itself; other command lines as they are.
pub fn expand(cmd: &clap::Command, args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(at) = args.iter().position(|a| a == "train") else {
        return Ok(args);
    };
    let rest: Vec<String> = args[at + 1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(path) = config_path(&rest) else {
        return Ok(args);
    };
    let Some(train) = cmd.find_subcommand("train") else {
        return Ok(args);
    };
    let options = read_options(Path::new(&path))?;
    let mut added: Vec<OsString> = Vec::new();
    for (key, value) in &options {
        let flag = key.replace('_', "-");
        let Some(arg) = train
            .get_arguments()
            .chain(cmd.get_arguments())
            .find(|a| a.get_long() == Some(flag.as_str()) && flag != "config")
        else {
            return Err(unknown_key(&path, key, train));
        };
        let given = |a: &String| a == &format!("--{flag}") || a.starts_with(&format!("--{flag}="));
        if rest.iter().any(given) {
            continue; // the command line wins
        }
        let takes_value = arg.get_action().takes_values();
        match (value, takes_value) {
            (Value::Bool(true), false) => added.push(format!("--{flag}").into()),
            (Value::Bool(false), false) => {}
            (Value::String(s), true) => added.extend([format!("--{flag}").into(), s.into()]),
            (Value::Number(n), true) => {
                added.extend([format!("--{flag}").into(), n.to_string().into()])
            }
            (Value::Bool(b), true) => {
                added.extend([format!("--{flag}").into(), b.to_string().into()])
            }
            _ => {
                return Err(bad_config(
                    &path,
                    format!(
                        "`{key}` = {value}: {}",
                        if takes_value {
                            "give one string or number"
                        } else {
                            "it is a switch: give true or false"
                        }
                    ),
                ))
            }
        }
    }
    let mut out = args[..=at].to_vec();
    out.extend(added);
    out.extend_from_slice(&args[at + 1..]);
    Ok(out)
}

/// The value of `--config` in `train`'s arguments.
fn config_path(rest: &[String]) -> Option<String> {
    rest.iter().enumerate().find_map(|(i, a)| {
        if a == "--config" {
            rest.get(i + 1).cloned()
        } else {
            a.strip_prefix("--config=").map(str::to_string)
        }
    })
}

/// The file's table of options: JSON for a `.json` file, TOML otherwise.
fn read_options(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let shown = path.display().to_string();
    let value: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| bad_config(&shown, format!("not JSON: {e}")))?
    } else {
        toml::from_str(&text).map_err(|e| bad_config(&shown, format!("not TOML: {e}")))?
    };
    match value {
        Value::Object(map) => Ok(map),
        other => Err(bad_config(
            &shown,
            format!("expected a table of options, found {other}"),
        )),
    }
}

fn bad_config(path: &str, detail: String) -> Error {
    Error::InvalidArgument {
        op: "train --config",
        detail: format!("{path}: {detail}"),
    }
}

/// An unknown option, with the closest of `train`'s.
fn unknown_key(path: &str, key: &str, train: &clap::Command) -> Error {
    let wanted = key.replace('_', "-");
    let closest = train
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "config")
        .min_by_key(|l| edit_distance(&wanted, l));
    bad_config(
        path,
        format!(
            "`{key}` is not an option of `wgformer train`{}",
            closest.map_or(String::new(), |c| format!(
                "; the closest is `{}`",
                c.replace('-', "_")
            ))
        ),
    )
}

/// Levenshtein distance between two short ASCII names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Every option of `train` as the run resolved it (file, flags and defaults),
/// by flag name: what the checkpoint records and the start of the run prints.
pub fn resolved(train: &clap::Command, m: &clap::ArgMatches) -> Value {
    let mut out = Map::new();
    for arg in train.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        let Ok(Some(raw)) = m.try_get_raw(id) else {
            continue;
        };
        let values: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        let value = match values.as_slice() {
            [one] => Value::String(one.clone()),
            many => Value::Array(many.iter().cloned().map(Value::String).collect()),
        };
        out.insert(long.replace('-', "_"), value);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("d-model", "d-model"), 0);
        assert_eq!(edit_distance("d-modle", "d-model"), 2);
        assert_eq!(edit_distance("lr", "lrs"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
