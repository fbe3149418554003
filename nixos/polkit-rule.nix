# The polkit rule that confines approved restarts: the service user may ask systemd to restart
# the units listed here, and nothing else (no other verb, unit or user).
#
# This text is a contract with the Rust side: `aiops policy polkit`
# (crates/aiops-actions/src/policy.rs, render_polkit_rule) prints the same rule from
# remediation.allowed. The body must be byte-for-byte identical; only the leading `//` comment
# lines (who generated it) differ, and tests/nix-eval compares the two. Units sorted by byte order
# as one JSON array without spaces (builtins.toJSON = serde_json::to_string), the user a JSON
# string, four-space indentation, LF line endings, a final newline.
{
  # The service user whose systemctl calls this rule allows.
  user,
  # Units allowed the "restart" verb, e.g. [ "aiops-demo-app.service" ].
  units,
}:
let
  js = builtins.toJSON;
in
''
  polkit.addRule(function(action, subject) {
      if (action.id === "org.freedesktop.systemd1.manage-units" &&
          subject.user === ${js user} &&
          action.lookup("verb") === "restart" &&
          ${js (builtins.sort builtins.lessThan units)}.indexOf(action.lookup("unit")) >= 0) {
          return polkit.Result.YES;
      }
  });
''
