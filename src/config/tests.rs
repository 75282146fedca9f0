use super::*;

fn invalid_keys(text: &str) -> Vec<String> {
    let config = Config::from_toml(text).expect("parses");
    match config.validate() {
        Err(ConfigError::Invalid(problems)) => problems.into_iter().map(|p| p.key).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn empty_file_is_the_documented_default() {
    let config = Config::from_toml("").unwrap();
    config.validate().unwrap();
    assert_eq!(config.server.bind().to_string(), "127.0.0.1:1080");
    assert_eq!(config.server.max_connections, 10_000);
    assert_eq!(config.server.handshake_timeout_ms, 10_000);
    assert_eq!(config.server.relay_idle_timeout(), None);
    assert_eq!(config.server.shutdown_grace_secs, 10);
    let pool = &config.server.pool;
    assert!(!pool.enabled);
    assert_eq!(pool.max_idle_per_dest, 4);
    assert_eq!(pool.max_total_idle, 100);
    assert_eq!(pool.idle_timeout_secs, 90);
    assert_eq!(pool.connect_timeout_ms, 5_000);
    assert_eq!(config.auth.socks_method, SocksMethod::None);
    assert_eq!(config.logging.level, LogLevel::Info);
}

#[test]
fn example_config_in_repo_is_valid() {
    let text = include_str!("../../config/rustsocks.toml");
    let config = Config::from_toml(text).unwrap();
    config.validate().unwrap();
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let err = Config::from_toml("[server]\nbind_prot = 1081\n").unwrap_err();
    assert!(err.contains("bind_prot"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn wrong_type_names_the_key() {
    let err = Config::from_toml("[server]\nbind_port = \"ten\"\n").unwrap_err();
    assert!(err.contains("bind_port"), "{err}");
    let err = Config::from_toml("[logging]\nlevel = \"loud\"\n").unwrap_err();
    assert!(err.contains("loud") && err.contains("level"), "{err}");
}

#[test]
fn zero_limits_are_rejected_together() {
    let keys = invalid_keys(
        "[server]\nmax_connections = 0\nhandshake_timeout_ms = 0\n[server.pool]\nconnect_timeout_ms = 0\n",
    );
    assert_eq!(
        keys,
        [
            "server.max_connections",
            "server.handshake_timeout_ms",
            "server.pool.connect_timeout_ms"
        ]
    );
}

#[test]
fn open_proxy_is_refused_unless_allowed() {
    let keys = invalid_keys("[server]\nbind_address = \"0.0.0.0\"\n");
    assert_eq!(keys, ["server.bind_address"]);
    let text = "[server]\nbind_address = \"0.0.0.0\"\nallow_open_proxy = true\n";
    let config = Config::from_toml(text).unwrap();
    config.validate().unwrap();
    assert!(config.warnings().iter().any(|w| w.contains("open proxy")));
    let text = "[server]\nbind_address = \"::\"\n[auth]\nsocks_method = \"userpass\"\n\
                [[auth.users]]\nusername = \"a\"\npassword = \"b\"\n";
    Config::from_toml(text).unwrap().validate().unwrap();
}

#[test]
fn user_entries_are_checked() {
    let text = r#"
        [auth]
        socks_method = "userpass"
        [[auth.users]]
        username = ""
        password = "x"
        [[auth.users]]
        username = "bob"
        [[auth.users]]
        username = "bob"
        password_hash = "not-a-hash"
    "#;
    let keys = invalid_keys(text);
    assert_eq!(
        keys,
        [
            "auth.users[0].username",
            "auth.users[1].password",
            "auth.users[2].username",
            "auth.users[2].password_hash"
        ]
    );
    assert_eq!(
        invalid_keys("[auth]\nsocks_method = \"userpass\"\n"),
        ["auth.users"]
    );
}

#[test]
fn secrets_do_not_reach_debug_output() {
    let text = "[[auth.users]]\nusername = \"alice\"\npassword = \"hunter2\"\n";
    let config = Config::from_toml(text).unwrap();
    let debug = format!("{config:?}");
    assert!(
        debug.contains("alice") && !debug.contains("hunter2"),
        "{debug}"
    );
}

#[test]
fn problem_message_names_key_value_and_expectation() {
    let error_text = |toml: &str| match Config::from_toml(toml).unwrap().validate() {
        Err(err) => err.to_string(),
        Ok(()) => panic!("expected an error for {toml:?}"),
    };
    assert_eq!(
        error_text("[server]\nmax_connections = 0\n"),
        "invalid configuration: server.max_connections = 0: expected at least 1"
    );
    assert_eq!(
        error_text("[server]\nmax_connections = 0\nhandshake_timeout_ms = 0\n"),
        "invalid configuration:\n  - server.max_connections = 0: expected at least 1\n  \
         - server.handshake_timeout_ms = 0: expected at least 1"
    );
}

#[test]
fn pool_limits_are_checked() {
    let keys = invalid_keys("[server.pool]\nmax_idle_per_dest = 10\nmax_total_idle = 5\n");
    assert_eq!(keys, ["server.pool.max_idle_per_dest"]);
    let keys = invalid_keys(
        "[server.pool]\nidle_timeout_secs = 0\nmax_total_idle = 0\nmax_idle_per_dest = 0\n",
    );
    assert_eq!(
        keys,
        [
            "server.pool.max_idle_per_dest",
            "server.pool.max_total_idle",
            "server.pool.idle_timeout_secs"
        ]
    );
}

#[test]
fn api_defaults_and_checks() {
    let config = Config::from_toml("").unwrap();
    assert!(config.api.enabled);
    assert_eq!(config.api.bind().to_string(), "127.0.0.1:9090");
    assert_eq!(config.telemetry.max_events, 256);
    assert_eq!(config.telemetry.retention_hours, 6);
    assert_eq!(
        invalid_keys("[api]\nbind_address = \"0.0.0.0\"\n"),
        ["api.bind_address"]
    );
    Config::from_toml("[api]\nbind_address = \"0.0.0.0\"\ntoken = \"t\"\n")
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(invalid_keys("[api]\ntoken = \"\"\n"), ["api.token"]);
    assert_eq!(
        invalid_keys("[telemetry]\nmax_events = 0\n"),
        ["telemetry.max_events"]
    );
}

#[test]
fn session_defaults_and_checks() {
    let config = Config::from_toml("").unwrap();
    assert!(config.sessions.enabled);
    assert_eq!(config.sessions.sqlite_path(), Some("rustsocks-sessions.db"));
    assert_eq!(
        (
            config.sessions.batch_size,
            config.sessions.batch_interval_ms
        ),
        (400, 250)
    );
    assert_eq!(config.sessions.retention_days, 90);
    let keys = invalid_keys("[sessions]\ndatabase_url = \"postgres://db/rs\"\nbatch_size = 0\n");
    assert_eq!(keys, ["sessions.database_url", "sessions.batch_size"]);
    let keys = invalid_keys("[sessions]\ndatabase_url = \"sqlite://:memory:\"\n");
    assert_eq!(keys, ["sessions.database_url"]);
}

#[test]
fn values_too_large_to_mean_anything_are_refused_not_crashed_on() {
    let keys = invalid_keys(
        "[server]\nbind_timeout_secs = 9223372036854775807\nmax_connections = 4000000000000000000\n\
         [sessions]\nretention_days = 213503982334601\nmax_queued = 1000000000000\n\
         [telemetry]\nretention_hours = 5124095576030431\n",
    );
    assert_eq!(
        keys,
        [
            "server.max_connections",
            "server.bind_timeout_secs",
            "sessions.retention_days",
            "sessions.max_queued",
            "telemetry.retention_hours"
        ]
    );
}

#[test]
fn per_ip_limit_defaults_to_a_quarter_and_must_fit_max_connections() {
    let per_ip = |max: usize| {
        Config::from_toml(&format!("[server]\nmax_connections = {max}\n"))
            .unwrap()
            .server
            .per_ip_limit()
    };
    assert_eq!(per_ip(10_000), 2_500);
    assert_eq!(per_ip(1_000), 250);
    assert_eq!(per_ip(100), 64);
    assert_eq!(per_ip(2), 2);
    let config =
        Config::from_toml("[server]\nmax_connections = 100\nmax_connections_per_ip = 100\n")
            .unwrap();
    assert_eq!(config.server.per_ip_limit(), 100);
    for bad in ["0", "101"] {
        let toml = format!("[server]\nmax_connections = 100\nmax_connections_per_ip = {bad}\n");
        assert_eq!(
            invalid_keys(&toml),
            ["server.max_connections_per_ip"],
            "{bad}"
        );
    }
}

#[test]
fn the_login_back_off_ends_inside_the_handshake_deadline() {
    let toml = |max: u64| {
        format!(
            "[server]\nhandshake_timeout_ms = 5000\n[auth]\nsocks_method = \"userpass\"\n\
             login_backoff_max_ms = {max}\n[[auth.users]]\nusername = \"a\"\npassword_hash = \"x\"\n"
        )
    };
    let long = Config::from_toml(&toml(8000)).unwrap();
    assert_eq!(
        long.login_backoff_limit(),
        std::time::Duration::from_millis(2500)
    );
    assert!(long
        .warnings()
        .iter()
        .any(|w| w.contains("auth.login_backoff_max_ms")));
    let short = Config::from_toml(&toml(2000)).unwrap();
    assert_eq!(
        short.login_backoff_limit(),
        std::time::Duration::from_millis(2000)
    );
    assert!(!short
        .warnings()
        .iter()
        .any(|w| w.contains("auth.login_backoff_max_ms")));
}

#[test]
fn access_rules_that_cannot_match_are_warned_about() {
    let no_auth = Config::from_toml(
        "[[acl.rules]]\naction = \"allow\"\nusers = [\"ops\"]\ndestinations = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    assert!(
        no_auth.warnings().iter().any(|w| w.contains("never match")),
        "{:?}",
        no_auth.warnings()
    );
    let misspelt = Config::from_toml(
        "[auth]\nsocks_method = \"userpass\"\n[[auth.users]]\nusername = \"alice\"\npassword_hash = \"x\"\n\
         [[acl.groups]]\nname = \"g\"\nmembers = [\"alcie\", \"alice\"]\n\
         [[acl.rules]]\naction = \"block\"\nusers = [\"bob\"]\n",
    )
    .unwrap();
    let warnings = misspelt.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.ends_with("not in auth.users: alcie, bob")),
        "{warnings:?}"
    );
    let empty_member =
        Config::from_toml("[[acl.groups]]\nname = \"g\"\nmembers = [\"a\", \"\"]\n").unwrap();
    let problems = empty_member.acl.load().unwrap_err();
    assert_eq!(problems[0].key, "acl.groups[0].members[1]");
}

#[test]
fn dns_defaults_and_limits() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(config.dns.resolver, ResolverKind::Cached);
    assert_eq!(config.dns.cache_size, 4096);
    assert_eq!(config.dns.max_ttl_secs, 300);
    assert_eq!(config.dns.negative_ttl_secs, 5);
    let err = Config::from_toml("[dns]\nresolver = \"bind9\"\n").unwrap_err();
    assert!(err.contains("bind9") && err.contains("resolver"), "{err}");
    let keys = invalid_keys("[dns]\ncache_size = 2000000\nmax_ttl_secs = 90000\n");
    assert_eq!(keys, ["dns.cache_size", "dns.max_ttl_secs"]);
}
