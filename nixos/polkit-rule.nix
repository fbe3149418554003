# The polkit rule that confines approved restarts: the service user may ask systemd to restart the
# units listed here, and is refused every other systemd1 action.
#
# This text is a contract shared with the Rust side (`aiops policy polkit`, which renders the same
# rule from remediation.allowed): the body must be byte-for-byte identical. Only the leading `//`
# comment lines (the header saying who generated it) may differ; tests/nix-eval compares the two.
# String literals are JSON (a valid JavaScript subset), units sorted, one unit list per rule.
{
  # The service user whose systemctl calls this rule decides.
  user,
  # Unit names allowed the "restart" verb, e.g. [ "aiops-demo-app.service" ].
  units,
}:
let
  js = builtins.toJSON;
in
''
  polkit.addRule(function (action, subject) {
    if (subject.user !== ${js user} || action.id.indexOf("org.freedesktop.systemd1.") !== 0) {
      return polkit.Result.NOT_HANDLED;
    }
    var restartable = ${js (builtins.sort builtins.lessThan units)};
    if (action.id === "org.freedesktop.systemd1.manage-units" &&
        action.lookup("verb") === "restart" &&
        restartable.indexOf(action.lookup("unit")) !== -1) {
      return polkit.Result.YES;
    }
    return polkit.Result.NO;
  });
''
