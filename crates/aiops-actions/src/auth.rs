//! Who may use the control socket: root, a member of `webhook.operators_group`, or the account
//! the executor itself runs as (in `aiops demo` that is the person running the demo; on a host
//! it is the service account, which no person logs in as).
//!
//! The identity is the peer's uid as the kernel reports it (`SO_PEERCRED`), resolved to a name by
//! the user database; nothing the client says about itself counts. Membership is read from the
//! group database at each connection (primary group or supplementary member), so adding or
//! removing an operator takes effect at once, without a new login.

use nix::unistd::{Gid, Group, Uid, User};

use crate::state::Actor;

/// The facts about a peer that the decision needs; [`is_operator`] is a pure function of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// The user's primary group and every group listing them as a member.
    pub groups: Vec<u32>,
}

/// The decision itself. `own_uid` is the uid the executor runs as.
pub fn is_operator(peer: &Peer, operators_gid: Option<u32>, own_uid: u32) -> bool {
    peer.uid == 0 || peer.uid == own_uid || operators_gid.is_some_and(|g| peer.groups.contains(&g))
}

/// Looks up a uid's groups in the user database (empty if the uid has no entry).
pub fn peer_of_uid(uid: u32) -> Peer {
    let mut groups = Vec::new();
    if let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) {
        groups.push(user.gid.as_raw());
        if let Ok(cname) = std::ffi::CString::new(user.name.clone())
            && let Ok(list) = nix::unistd::getgrouplist(&cname, user.gid)
        {
            groups.extend(list.into_iter().map(Gid::as_raw));
        }
        groups.sort_unstable();
        groups.dedup();
    }
    Peer { uid, groups }
}

/// The gid of the operators group, if the group exists.
pub fn operators_gid(name: &str) -> Option<u32> {
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Authorizes a connecting uid: the actor to record, or why not (with what to do about it).
pub fn authorize(uid: u32, operators_group: &str) -> Result<Actor, String> {
    let actor = Actor::from_uid(uid);
    let gid = operators_gid(operators_group);
    if is_operator(&peer_of_uid(uid), gid, nix::unistd::geteuid().as_raw()) {
        return Ok(actor);
    }
    Err(match gid {
        None => format!(
            "{actor} may not approve: the operators group {operators_group:?} does not exist on this host; create it and add the people who may approve"
        ),
        Some(_) => format!(
            "{actor} may not approve: not root and not in group {operators_group:?}; ask an administrator to add you (usermod -aG {operators_group} {})",
            actor.name
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_members_only() {
        let root = Peer {
            uid: 0,
            groups: vec![0],
        };
        let member = Peer {
            uid: 1000,
            groups: vec![1000, 4242],
        };
        let primary = Peer {
            uid: 1001,
            groups: vec![4242],
        };
        let other = Peer {
            uid: 1002,
            groups: vec![1002, 27],
        };
        let own = 999;
        assert!(is_operator(&root, Some(4242), own));
        assert!(is_operator(&root, None, own));
        assert!(is_operator(&member, Some(4242), own));
        assert!(is_operator(&primary, Some(4242), own));
        assert!(!is_operator(&other, Some(4242), own));
        assert!(!is_operator(&member, None, own));
        // The executor's own account (the person running `aiops demo`).
        assert!(is_operator(&other, None, other.uid));
    }

    #[test]
    fn root_is_authorized_without_a_group() {
        let actor = authorize(0, "no-such-group-aiops-test").unwrap();
        assert_eq!(actor.uid, Some(0));
        assert_eq!(actor.name, "root");
    }

    #[test]
    fn an_unknown_uid_is_refused_with_what_to_do() {
        let err = authorize(4_000_000, "no-such-group-aiops-test").unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }
}
