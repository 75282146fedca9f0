//! `auth.socks_method = "pam"` against the system's own PAM: a throw-away user
//! with a password and a PAM service file for it (pam_unix), made by the test and
//! removed when it ends. Needs root (creating users; pam_unix reads /etc/shadow
//! only as root), which the test command has.

mod common;

use std::process::Command;

use rustsocks::protocol::socks5::{Command as SocksCommand, Reply, ReplyCode, Request};
use rustsocks::protocol::Encode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::socks::{assert_echo, login, read_msg};
use common::{config, upstream, Proxy};

/// A system user, a group it belongs to and a PAM service, removed on drop.
struct SystemFixture {
    user: String,
    group: String,
    service: String,
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SystemFixture {
    /// None when not root: the test is skipped.
    fn new(tag: &str) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (creates a system user)");
            return None;
        }
        let id = std::process::id();
        let fixture = Self {
            user: format!("rs{tag}{id}"),
            group: format!("rsg{tag}{id}"),
            service: format!("rustsocks-test-{tag}-{id}"),
        };
        run("groupadd", &[&fixture.group], None);
        run(
            "useradd",
            &[
                "-M",
                "-N",
                "-s",
                "/usr/sbin/nologin",
                "-G",
                &fixture.group,
                &fixture.user,
            ],
            None,
        );
        run(
            "chpasswd",
            &[],
            Some(&format!("{}:right horse battery\n", fixture.user)),
        );
        // nodelay: the proxy holds back failing addresses itself; pam_unix's own
        // 2 s failure delay would hold a check slot.
        std::fs::write(
            format!("/etc/pam.d/{}", fixture.service),
            "auth required pam_unix.so nodelay\naccount required pam_unix.so\n",
        )
        .unwrap();
        Some(fixture)
    }

    fn config(&self, rest: &str) -> String {
        config(
            "",
            &format!(
                "[auth]\nsocks_method = \"pam\"\npam_service = \"{}\"\n{rest}",
                self.service
            ),
        )
    }
}

impl Drop for SystemFixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/etc/pam.d/{}", self.service));
        let _ = Command::new("userdel").arg(&self.user).status();
        let _ = Command::new("groupdel").arg(&self.group).status();
    }
}

#[tokio::test]
async fn pam_accepts_the_right_password_and_refuses_a_wrong_one_or_an_unknown_user() {
    let Some(sys) = SystemFixture::new("a") else {
        return;
    };
    let echo = upstream::echo();
    let proxy = Proxy::start(&sys.config(""));
    let mut tunnel = login(proxy.addr, &sys.user, "right horse battery")
        .await
        .expect("the system password is accepted");
    tunnel
        .write_all(
            &Request {
                command: SocksCommand::Connect,
                dest: echo.into(),
            }
            .to_bytes(),
        )
        .await
        .unwrap();
    let reply = read_msg::<Reply>(&mut tunnel).await;
    assert_eq!(reply.code, ReplyCode::Succeeded);
    assert_echo(&mut tunnel, b"through pam").await;
    assert!(
        proxy.wait_for_log(&format!(r#""user":"Some(\"{}\")""#, sys.user)),
        "{}",
        proxy.log()
    );
    assert!(login(proxy.addr, &sys.user, "wrong horse").await.is_none());
    assert!(login(proxy.addr, "rs-no-such-user", "right horse battery")
        .await
        .is_none());
}

#[tokio::test]
async fn a_locked_or_expired_account_is_refused_with_the_right_password() {
    let Some(sys) = SystemFixture::new("b") else {
        return;
    };
    let proxy = Proxy::start(&sys.config(""));
    assert!(login(proxy.addr, &sys.user, "right horse battery")
        .await
        .is_some());
    run("usermod", &["-L", &sys.user], None);
    assert!(
        login(proxy.addr, &sys.user, "right horse battery")
            .await
            .is_none(),
        "locked"
    );
    run("usermod", &["-U", &sys.user], None);
    assert!(
        login(proxy.addr, &sys.user, "right horse battery")
            .await
            .is_some(),
        "unlocked"
    );
    // Expired yesterday: the password is right, the account checks refuse.
    run("chage", &["-E", "1", &sys.user], None);
    assert!(
        login(proxy.addr, &sys.user, "right horse battery")
            .await
            .is_none(),
        "expired"
    );
    assert!(proxy.wait_for_log("account not usable"), "{}", proxy.log());
}

/// A CONNECT by `user` through `proxy`; the reply code.
async fn connect_as(
    proxy: std::net::SocketAddr,
    user: &str,
    dest: std::net::SocketAddr,
) -> ReplyCode {
    let mut s = login(proxy, user, "right horse battery")
        .await
        .expect("the system password is accepted");
    s.write_all(
        &Request {
            command: SocksCommand::Connect,
            dest: dest.into(),
        }
        .to_bytes(),
    )
    .await
    .unwrap();
    read_msg::<Reply>(&mut s).await.code
}

/// `acl.system_groups`: a rule naming a group no `[[acl.groups]]` defines applies
/// to the members the system knows (here /etc/group; SSSD feeds the same call).
#[tokio::test]
async fn a_group_rule_applies_through_system_membership() {
    let Some(member) = SystemFixture::new("d") else {
        return;
    };
    let Some(outsider) = SystemFixture::new("e") else {
        return;
    };
    // The outsider logs in through the member's PAM service: any service that
    // uses pam_unix checks any local user.
    let rules = format!(
        "[acl]\ndefault_policy = \"block\"\nsystem_groups = true\n\
         [[acl.rules]]\naction = \"allow\"\ngroups = [\"{}\"]\n",
        member.group
    );
    let echo = upstream::echo();
    let proxy = Proxy::start(&member.config(&rules));
    assert_eq!(
        connect_as(proxy.addr, &member.user, echo).await,
        ReplyCode::Succeeded
    );
    assert_eq!(
        connect_as(proxy.addr, &outsider.user, echo).await,
        ReplyCode::NotAllowed
    );
}

/// SOCKS4 cannot carry a password: with PAM it is refused (0x5B), not let in
/// under the user id it claims.
#[tokio::test]
async fn socks4_is_refused_when_logins_go_through_pam() {
    let Some(sys) = SystemFixture::new("c") else {
        return;
    };
    let echo = upstream::echo();
    let proxy = Proxy::start(&sys.config(""));
    let mut s = common::socks::connect(proxy.addr).await;
    let std::net::SocketAddr::V4(v4) = echo else {
        unreachable!()
    };
    let mut req = vec![4, 1];
    req.extend_from_slice(&v4.port().to_be_bytes());
    req.extend_from_slice(&v4.ip().octets());
    req.extend_from_slice(sys.user.as_bytes());
    req.push(0);
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 0x5B, "{reply:?}");
}
