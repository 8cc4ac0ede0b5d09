//! Kubernetes' `$(VAR)` expansion of a container's command, args and env values: `$(NAME)` becomes
//! the variable's value when it is defined and stays as written when not, `$$` is an escaped `$`,
//! and any other `$` is kept.

use std::collections::HashMap;

pub fn expand(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|inner| inner.split_once(')')) {
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_as_kubernetes_does() {
        let vars: HashMap<String, String> = [("POD_IP", "127.0.3.4"), ("EMPTY", ""), ("DOLLAR", "$(POD_IP)")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (text, expanded) in [
            ("--host=$(POD_IP)", "--host=127.0.3.4"),
            ("$(POD_IP):$(POD_IP)", "127.0.3.4:127.0.3.4"),
            ("[$(EMPTY)]", "[]"),
            ("$(UNDEFINED)", "$(UNDEFINED)"),
            ("$$(POD_IP)", "$(POD_IP)"),
            ("$$$(POD_IP)", "$127.0.3.4"),
            ("$$", "$"),
            ("cost $5", "cost $5"),
            ("trailing $", "trailing $"),
            ("$(unterminated", "$(unterminated"),
            ("$(DOLLAR)", "$(POD_IP)"),
            ("no variables", "no variables"),
        ] {
            assert_eq!(expand(text, &vars), expanded, "expanding {text:?}");
        }
    }
}
