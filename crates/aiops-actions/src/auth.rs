//! Who may use the control socket: root, or a member of `webhook.operators_group`.
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

/// The decision itself.
pub fn is_operator(peer: &Peer, operators_gid: Option<u32>) -> bool {
    peer.uid == 0 || operators_gid.is_some_and(|g| peer.groups.contains(&g))
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
    if is_operator(&peer_of_uid(uid), gid) {
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
        assert!(is_operator(&root, Some(4242)));
        assert!(is_operator(&root, None));
        assert!(is_operator(&member, Some(4242)));
        assert!(is_operator(&primary, Some(4242)));
        assert!(!is_operator(&other, Some(4242)));
        assert!(!is_operator(&member, None));
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
