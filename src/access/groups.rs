//! A user's groups on this system (`acl.system_groups`): the names of the groups
//! `getgrouplist` gives for the user's passwd entry, so /etc/group locally, or LDAP
//! and Active Directory through SSSD. Looked up once per connection after the
//! handshake (off the async workers: a directory server may be slow) and cached
//! for `TTL`, so a burst of connections from one user asks the system once.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a user's groups are reused: a membership change shows within this.
const TTL: Duration = Duration::from_secs(60);
/// Users cached at most; past it the cache starts over (each entry is small, and
/// this bounds what many distinct users can make it hold).
const MAX_USERS: usize = 10_000;
/// Groups read per user at most.
const MAX_GROUPS: usize = 4_096;

/// A user's group names.
pub type Groups = Arc<[Box<str>]>;

/// No groups: the answer for an unknown user or a failed lookup.
fn none() -> Arc<[Box<str>]> {
    Arc::from(Vec::<Box<str>>::new())
}

#[derive(Debug, Default)]
pub struct SystemGroups {
    /// User → when looked up, and the groups.
    cache: Mutex<HashMap<Box<str>, (Instant, Groups)>>,
}

impl SystemGroups {
    /// The cached groups of `user`, if fresh.
    pub fn cached(&self, user: &str) -> Option<Arc<[Box<str>]>> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(user)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, groups)| Arc::clone(groups))
    }

    /// The groups of `user`, from the cache or the system. Blocks on a miss.
    pub fn lookup_blocking(&self, user: &str) -> Arc<[Box<str>]> {
        if let Some(groups) = self.cached(user) {
            return groups;
        }
        let groups: Arc<[Box<str>]> = Arc::from(groups_of(user).unwrap_or_default());
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_USERS {
            cache.clear();
        }
        cache.insert(user.into(), (Instant::now(), Arc::clone(&groups)));
        groups
    }

    /// `lookup_blocking` on the blocking pool (the cache is asked first, inline).
    pub async fn lookup(self: &Arc<Self>, user: &str) -> Arc<[Box<str>]> {
        if user.is_empty() {
            return none();
        }
        if let Some(groups) = self.cached(user) {
            return groups;
        }
        let (this, user) = (Arc::clone(self), user.to_owned());
        tokio::task::spawn_blocking(move || this.lookup_blocking(&user))
            .await
            .unwrap_or_else(|_| none())
    }
}

/// The names of `user`'s groups (primary included); None if the user is unknown.
fn groups_of(user: &str) -> Option<Vec<Box<str>>> {
    let name = CString::new(user).ok()?;
    let gid = primary_gid(&name)?;
    let mut gids: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = gids.len() as libc::c_int;
        // SAFETY: `gids` has room for `n` entries; getgrouplist writes at most that
        // many and sets `n` to the number it has (or needs, when it returns -1).
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, gids.as_mut_ptr(), &mut n) };
        let n = usize::try_from(n).unwrap_or(0);
        if rc >= 0 {
            gids.truncate(n.min(gids.len()));
            break;
        }
        if gids.len() >= MAX_GROUPS {
            break;
        }
        gids.resize(n.clamp(gids.len() * 2, MAX_GROUPS), 0);
    }
    Some(gids.into_iter().filter_map(group_name).collect())
}

fn primary_gid(name: &CStr) -> Option<libc::gid_t> {
    // SAFETY: a zeroed passwd is a valid out-parameter for getpwnam_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: valid pointers and buffer length; the strings `pwd` points to live
    // in `buf`, which outlives their (non-)use here.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some(pwd.pw_gid)
}

fn group_name(gid: libc::gid_t) -> Option<Box<str>> {
    // SAFETY: a zeroed group is a valid out-parameter for getgrgid_r.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as c_char; 64 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: valid pointers and buffer length.
    let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || grp.gr_name.is_null() {
        return None;
    }
    // SAFETY: gr_name points into `buf`, NUL-terminated, while `buf` lives.
    let name = unsafe { CStr::from_ptr(grp.gr_name) };
    Some(name.to_string_lossy().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_the_root_group_and_an_unknown_user_in_none() {
        let groups = SystemGroups::default();
        assert!(groups
            .lookup_blocking("root")
            .iter()
            .any(|g| &**g == "root"));
        assert!(groups.lookup_blocking("rs-no-such-user-here").is_empty());
        // The second answer comes from the cache.
        assert!(groups.cached("root").is_some());
    }
}
