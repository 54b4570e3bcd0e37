//! `esc admin status`: asks every member it can find (the `--addr` list, then every member the
//! answers name) for its own status and prints one row per member, or JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use eventstreamcore::client::Client;
use eventstreamcore::rt;
use eventstreamcore::tls::ClientTls;
use eventstreamcore::wire::AdminRequest;
use serde_json::{Value, json};

/// How long one member may take to answer before it is reported unreachable.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(3);

/// One member's own view, parsed from its status text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeView {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit: u64,
    pub applied: u64,
    /// The members it lists: id → (kind, client address).
    pub members: BTreeMap<u64, (String, String)>,
}

/// Parses the text a member answers to ADMIN status (`node 1 role Leader term 2 …` then one
/// `member ID KIND raft ADDR client ADDR …` line per member).
pub fn parse_status(text: &str) -> Option<NodeView> {
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next()?.split_whitespace().collect();
    let field = |k: &str| head.windows(2).find(|w| w[0] == k).map(|w| w[1]);
    let num = |k: &str| field(k).and_then(|v| v.parse::<u64>().ok());
    let mut v = NodeView {
        id: num("node")?,
        role: field("role")?.to_string(),
        term: num("term")?,
        leader: num("leader"),
        commit: num("commit")?,
        applied: num("applied")?,
        members: BTreeMap::new(),
    };
    for line in lines {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() >= 7
            && w[0] == "member"
            && w[5] == "client"
            && let Ok(id) = w[1].parse()
        {
            v.members.insert(id, (w[2].to_string(), w[6].to_string()));
        }
    }
    Some(v)
}

/// One row of the table: what a member said, or why it could not be asked.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: Option<u64>,
    pub addr: String,
    pub answer: Result<NodeView, String>,
}

/// Asks one member for its status.
async fn ask(addr: SocketAddr, token: &str, tls: Option<&ClientTls>) -> Result<NodeView, String> {
    let text = rt::time::timeout(MEMBER_TIMEOUT, async {
        let mut c = Client::connect_with(addr, tls).await.map_err(|e| e.to_string())?;
        c.set_timeout(MEMBER_TIMEOUT);
        c.hello("esc-admin", token).await.map_err(|e| e.to_string())?;
        c.admin(AdminRequest::Status).await.map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| format!("no answer within {} s", MEMBER_TIMEOUT.as_secs()))??;
    parse_status(&text).ok_or_else(|| format!("unreadable status: {}", text.lines().next().unwrap_or("")))
}

/// Asks every member in `addrs` and every member their answers name (once each).
pub async fn collect(addrs: &[SocketAddr], token: &str, tls: Option<&ClientTls>) -> Vec<Row> {
    let mut todo: Vec<SocketAddr> = addrs.to_vec();
    let mut asked: Vec<SocketAddr> = Vec::new();
    let mut rows = Vec::new();
    while let Some(addr) = todo.pop() {
        if asked.contains(&addr) {
            continue;
        }
        asked.push(addr);
        let answer = ask(addr, token, tls).await;
        if let Ok(v) = &answer {
            for (_, client) in v.members.values() {
                if let Ok(a) = client.parse::<SocketAddr>()
                    && !asked.contains(&a)
                {
                    todo.push(a);
                }
            }
        }
        rows.push(Row { id: answer.as_ref().ok().map(|v| v.id), addr: addr.to_string(), answer });
    }
    // Name unreachable members by the id the others list them under.
    let listed: BTreeMap<String, u64> = rows
        .iter()
        .filter_map(|r| r.answer.as_ref().ok())
        .flat_map(|v| v.members.iter().map(|(id, (_, client))| (client.clone(), *id)))
        .collect();
    for r in &mut rows {
        if r.id.is_none() {
            r.id = listed.get(&r.addr).copied();
        }
    }
    rows.sort_by_key(|r| (r.id.unwrap_or(u64::MAX), r.addr.clone()));
    rows
}

/// The highest commit index any member reported (lag is measured against it).
fn best_commit(rows: &[Row]) -> u64 {
    rows.iter().filter_map(|r| r.answer.as_ref().ok()).map(|v| v.commit).max().unwrap_or(0)
}

/// The table `esc admin status` prints.
pub fn table(rows: &[Row]) -> String {
    let best = best_commit(rows);
    let mut out = format!(
        "{:<4} {:<21} {:<13} {:>6} {:>17} {:>6}  {}\n",
        "ID", "ADDRESS", "ROLE", "TERM", "COMMIT/APPLIED", "LAG", "REACHABLE"
    );
    for r in rows {
        let id = r.id.map_or("?".to_string(), |i| i.to_string());
        let line = match &r.answer {
            Ok(v) => format!(
                "{id:<4} {:<21} {:<13} {:>6} {:>17} {:>6}  yes",
                r.addr,
                v.role,
                v.term,
                format!("{}/{}", v.commit, v.applied),
                best.saturating_sub(v.applied)
            ),
            Err(e) => {
                format!("{id:<4} {:<21} {:<13} {:>6} {:>17} {:>6}  no: {e}", r.addr, "-", "-", "-", "-")
            }
        };
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// The same as JSON: `{"members": [...]}`, unreachable members with `"reachable": false` and the error.
pub fn json(rows: &[Row]) -> Value {
    let best = best_commit(rows);
    let members: Vec<Value> = rows
        .iter()
        .map(|r| match &r.answer {
            Ok(v) => json!({
                "id": r.id, "address": r.addr, "reachable": true, "role": v.role, "term": v.term,
                "leader": v.leader, "commit": v.commit, "applied": v.applied,
                "lag": best.saturating_sub(v.applied),
            }),
            Err(e) => json!({ "id": r.id, "address": r.addr, "reachable": false, "error": e }),
        })
        .collect();
    json!({ "members": members })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEADER: &str = "node 1 role Leader term 4 leader 1 commit 12 applied 12 last 12\n\
                          member 1 voter raft 127.0.0.1:7170 client 127.0.0.1:7070\n\
                          member 2 voter raft 127.0.0.1:7171 client 127.0.0.1:7071 match 12 Replicate\n\
                          member 3 voter raft 127.0.0.1:7172 client 127.0.0.1:7072 match 3 Probe\n";

    #[test]
    fn parses_the_status_text() {
        let v = parse_status(LEADER).unwrap();
        assert_eq!(
            (v.id, v.role.as_str(), v.term, v.leader, v.commit, v.applied),
            (1, "Leader", 4, Some(1), 12, 12)
        );
        assert_eq!(v.members[&3], ("voter".to_string(), "127.0.0.1:7072".to_string()));
        let none =
            parse_status("node 2 role Follower term 4 leader none commit 3 applied 2 last 3\n").unwrap();
        assert_eq!(none.leader, None);
        assert_eq!(parse_status("garbage"), None);
    }

    #[test]
    fn one_row_per_member_with_lag_and_reachability() {
        let leader = parse_status(LEADER).unwrap();
        let slow = NodeView { id: 2, role: "Follower".into(), applied: 9, ..leader.clone() };
        let rows = vec![
            Row { id: Some(1), addr: "127.0.0.1:7070".into(), answer: Ok(leader) },
            Row { id: Some(2), addr: "127.0.0.1:7071".into(), answer: Ok(slow) },
            Row { id: Some(3), addr: "127.0.0.1:7072".into(), answer: Err("connection refused".into()) },
        ];
        let t = table(&rows);
        assert_eq!(t.lines().count(), 4, "{t}");
        assert!(
            t.lines().nth(2).unwrap().contains("12/9") && t.lines().nth(2).unwrap().contains(" 3  yes"),
            "{t}"
        );
        assert!(t.lines().nth(3).unwrap().ends_with("no: connection refused"), "{t}");
        let j = json(&rows);
        assert_eq!(j["members"][1]["lag"], 3);
        assert_eq!(j["members"][2]["reachable"], false);
    }
}
