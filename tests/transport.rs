//! The Raft peer transport over real loopback sockets.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use eventstreamcore::raft::{Body, Message, NodeId};
use eventstreamcore::rt::{NodeClock, rng_from_seed};
use eventstreamcore::transport::frame::encode_frame;
use eventstreamcore::transport::handshake::{self, Local};
use eventstreamcore::transport::{Inbox, PeerTransport, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLUSTER: &str = "test-cluster";
const SECRET: &str = "correct horse battery staple";

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn config(id: NodeId, cluster: &str, secret: &str) -> TransportConfig {
    let mut cfg = TransportConfig::new(id, cluster, secret);
    cfg.connect_backoff_min_ms = 5;
    cfg.connect_backoff_max_ms = 50;
    cfg.handshake_timeout_ms = 1_000;
    cfg.queue_per_peer = 20_000;
    cfg
}

async fn start_with(cfg: TransportConfig, addr: SocketAddr) -> (PeerTransport, Inbox) {
    let seed = cfg.node_id;
    PeerTransport::bind(cfg, addr, NodeClock::new(), rng_from_seed(seed)).await.unwrap()
}

async fn start(id: NodeId) -> (PeerTransport, Inbox) {
    start_with(config(id, CLUSTER, SECRET), any_port()).await
}

fn msg(from: NodeId, to: NodeId, seq: u64) -> Message {
    Message { from, to, term: 1, body: Body::Heartbeat { commit: seq, round: seq } }
}

fn seq_of(m: &Message) -> u64 {
    match m.body {
        Body::Heartbeat { round, .. } => round,
        _ => panic!("unexpected body {m:?}"),
    }
}

/// Polls `cond` every 5 ms for up to 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Receives exactly `n` messages (10 s limit).
async fn recv_n(inbox: &mut Inbox, n: usize) -> Vec<Message> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), inbox.recv()).await {
            Ok(Some(m)) => out.push(m),
            Ok(None) => panic!("inbox closed after {} of {n}", out.len()),
            Err(_) => panic!("only {} of {n} messages arrived", out.len()),
        }
    }
    out
}

#[tokio::test]
async fn three_nodes_exchange_thousands_of_messages_in_order_per_pair() {
    const N: u64 = 3_000;
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id).await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(t, _)| t.local_addr()).collect();
    for (i, (t, _)) in nodes.iter().enumerate() {
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                t.set_peer(j as u64 + 1, addr.to_string());
            }
        }
    }
    // Interleave sends to both peers, in bursts, so the sender tasks batch (pipelining).
    for seq in 0..N {
        for (i, (t, _)) in nodes.iter().enumerate() {
            let from = i as u64 + 1;
            for to in 1..=3 {
                if to != from {
                    t.send(msg(from, to, seq));
                }
            }
        }
        if seq % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for (i, (t, inbox)) in nodes.iter_mut().enumerate() {
        let me = i as u64 + 1;
        let got = recv_n(inbox, 2 * N as usize).await;
        let mut next: BTreeMap<NodeId, u64> = BTreeMap::new();
        for m in &got {
            assert_eq!(m.to, me);
            let want = next.entry(m.from).or_insert(0);
            assert_eq!(seq_of(m), *want, "node {me}: message from {} out of order or lost", m.from);
            *want += 1;
        }
        assert_eq!(next.values().copied().collect::<Vec<_>>(), vec![N, N]);
        let s = t.stats();
        assert_eq!(s.received, 2 * N);
        assert_eq!(s.dropped, 0, "{s:?}");
        assert_eq!(s.handshake_failures + s.bad_frames + s.rejected, 0, "{s:?}");
    }
    eventually("all sends flushed", || nodes.iter().all(|(t, _)| t.stats().sent == 2 * N)).await;
    for (t, _) in &nodes {
        assert_eq!(t.stats().connects, 2);
        t.shutdown().await;
    }
}

#[tokio::test]
async fn unknown_peers_and_full_queues_drop_and_count() {
    let mut cfg = config(1, CLUSTER, SECRET);
    cfg.queue_per_peer = 4;
    let (a, _ai) = start_with(cfg, any_port()).await;
    a.send(msg(1, 9, 0));
    assert_eq!(a.stats().dropped, 1);
    // A peer that never answers: its queue fills and the rest is dropped.
    a.set_peer(2, "127.0.0.1:1".into());
    for seq in 0..10 {
        a.send(msg(1, 2, seq));
    }
    let s = a.stats();
    assert_eq!(s.dropped, 1 + 6, "one to an unknown peer, six over the queue of four: {s:?}");
    eventually("unreachable reported", || a.take_unreachable() == vec![2]).await;
    a.shutdown().await;
}

/// Starts `a` and `b` with the given configs, lets each dial the other, and checks that no
/// connection is established and nothing is delivered.
async fn assert_refused(cfg_a: TransportConfig, cfg_b: TransportConfig) {
    let (a, mut ai) = start_with(cfg_a, any_port()).await;
    let (b, mut bi) = start_with(cfg_b, any_port()).await;
    a.set_peer(2, b.local_addr().to_string());
    b.set_peer(1, a.local_addr().to_string());
    for seq in 0..50 {
        a.send(msg(1, 2, seq));
        b.send(msg(2, 1, seq));
    }
    eventually("both sides count refused handshakes", || {
        a.stats().handshake_failures >= 4 && b.stats().handshake_failures >= 4
    })
    .await;
    eventually("a reports b unreachable", || a.take_unreachable().contains(&2)).await;
    for t in [&a, &b] {
        let s = t.stats();
        assert_eq!((s.connects, s.accepted, s.received, s.sent), (0, 0, 0, 0), "{s:?}");
    }
    assert!(ai.try_recv().is_none());
    assert!(bi.try_recv().is_none());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_wrong_secret_is_refused() {
    assert_refused(config(1, CLUSTER, SECRET), config(2, CLUSTER, "another secret")).await;
}

#[tokio::test]
async fn a_wrong_cluster_id_is_refused() {
    assert_refused(config(1, CLUSTER, SECRET), config(2, "other-cluster", SECRET)).await;
}

#[tokio::test]
async fn a_listener_with_another_node_id_is_refused() {
    // b really is node 3, but a was told node 2 lives there.
    let (a, mut ai) = start(1).await;
    let (b, mut bi) = start(3).await;
    a.set_peer(2, b.local_addr().to_string());
    a.send(msg(1, 2, 0));
    eventually("a refuses the wrong node", || a.stats().handshake_failures >= 2).await;
    assert_eq!(b.stats().received, 0);
    assert!(bi.try_recv().is_none() && ai.try_recv().is_none());
    a.shutdown().await;
    b.shutdown().await;
}

/// A raw client that authenticates as `id` to the transport at `addr`.
async fn authenticated_raw_client(addr: SocketAddr, id: NodeId, target: NodeId) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let local = Local {
        node_id: id,
        cluster_id: CLUSTER.as_bytes(),
        secret: SECRET.as_bytes(),
        nonce: [id as u8; 32],
        pake_seed: [id as u8; 32],
    };
    handshake::dial(&mut s, &local, target).await.unwrap();
    s
}

#[tokio::test]
async fn garbage_half_frames_bad_frames_and_spoofed_senders_neither_crash_nor_block_others() {
    let (a, _ai) = start(1).await;
    let (b, mut bi) = start(2).await;
    let b_addr = b.local_addr();
    a.set_peer(2, b_addr.to_string());

    // Random bytes on the peer port.
    let mut garbage = TcpStream::connect(b_addr).await.unwrap();
    garbage.write_all(&[0xde; 300]).await.unwrap();
    garbage.flush().await.unwrap();
    // A client that stalls mid-hello and one that authenticates then stalls mid-frame.
    let mut stalled_hello = TcpStream::connect(b_addr).await.unwrap();
    stalled_hello.write_all(&handshake::MAGIC).await.unwrap();
    let mut half = authenticated_raw_client(b_addr, 7, 2).await;
    let mut frame = Vec::new();
    encode_frame(&msg(7, 2, 0), 1 << 20, &mut frame).unwrap();
    half.write_all(&frame[..frame.len() - 2]).await.unwrap();
    half.flush().await.unwrap();
    // An authenticated client whose frame has a flipped bit.
    let mut corrupt = authenticated_raw_client(b_addr, 8, 2).await;
    let mut frame = Vec::new();
    encode_frame(&msg(8, 2, 0), 1 << 20, &mut frame).unwrap();
    *frame.last_mut().unwrap() ^= 0x40;
    corrupt.write_all(&frame).await.unwrap();
    // An authenticated node 9 that claims to be node 1, then tells the truth.
    let mut spoofer = authenticated_raw_client(b_addr, 9, 2).await;
    let mut frames = Vec::new();
    encode_frame(&msg(1, 2, 666), 1 << 20, &mut frames).unwrap();
    encode_frame(&msg(9, 3, 667), 1 << 20, &mut frames).unwrap();
    encode_frame(&msg(9, 2, 668), 1 << 20, &mut frames).unwrap();
    spoofer.write_all(&frames).await.unwrap();

    // Real traffic from a still flows.
    for seq in 0..500 {
        a.send(msg(1, 2, seq));
    }
    let mut from_a = Vec::new();
    let mut from_9 = Vec::new();
    while from_a.len() < 500 || from_9.is_empty() {
        let m = tokio::time::timeout(Duration::from_secs(10), bi.recv()).await.unwrap().unwrap();
        match m.from {
            1 => from_a.push(seq_of(&m)),
            9 => from_9.push(seq_of(&m)),
            other => panic!("message from {other} must not be delivered: {m:?}"),
        }
    }
    assert_eq!(from_a, (0..500).collect::<Vec<_>>());
    assert_eq!(from_9, vec![668], "only the honest message of node 9 is delivered");

    eventually("garbage refused and bad frame counted", || {
        let s = b.stats();
        s.handshake_failures >= 1 && s.bad_frames == 1 && s.rejected == 2
    })
    .await;
    // The corrupt frame closed its connection.
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), corrupt.read(&mut byte)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");

    // Connections that vanish (mid-hello, mid-frame) free their tasks.
    assert!(b.live_tasks() >= 4, "accept loop, a's connection, the stalled ones");
    drop(stalled_hello);
    drop(half);
    drop(garbage);
    drop(spoofer);
    // b has no peers of its own: what remains is its accept loop and a's connection.
    eventually("vanished connections free their tasks", || b.live_tasks() == 2).await;
    assert!(bi.try_recv().is_none());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_handshake_that_stalls_times_out() {
    let mut cfg = config(2, CLUSTER, SECRET);
    cfg.handshake_timeout_ms = 100;
    let (b, _bi) = start_with(cfg, any_port()).await;
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    s.write_all(&handshake::MAGIC).await.unwrap();
    eventually("stalled handshake counted", || b.stats().handshake_failures == 1).await;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert_eq!(b.live_tasks(), 1, "only the accept loop remains");
    b.shutdown().await;
}

#[tokio::test]
async fn a_peer_restarted_on_the_same_address_is_reconnected_to() {
    let (a, _ai) = start(1).await;
    let (b, mut bi) = start(2).await;
    let b_addr = b.local_addr();
    a.set_peer(2, b_addr.to_string());
    for seq in 0..100 {
        a.send(msg(1, 2, seq));
    }
    assert_eq!(recv_n(&mut bi, 100).await.len(), 100);
    b.shutdown().await;
    drop(bi);
    drop(b);
    eventually("a notices b is gone", || a.take_unreachable().contains(&2)).await;

    let (b2, mut bi2) = start_with(config(2, CLUSTER, SECRET), b_addr).await;
    // Sent while b2 may not be connected yet: queued, then delivered in order.
    for seq in 100..300 {
        a.send(msg(1, 2, seq));
    }
    let got: Vec<u64> = recv_n(&mut bi2, 200).await.iter().map(seq_of).collect();
    assert_eq!(got, (100..300).collect::<Vec<_>>());
    let s = a.stats();
    assert!(s.reconnects >= 1 && s.connects >= 2, "{s:?}");
    a.shutdown().await;
    b2.shutdown().await;
}

#[tokio::test]
async fn re_addressing_a_peer_moves_its_traffic() {
    let (a, _ai) = start(1).await;
    let (b, mut bi) = start(2).await;
    a.set_peer(2, "127.0.0.1:1".into());
    eventually("the wrong address fails", || a.stats().connect_failures >= 1).await;
    a.set_peer(2, b.local_addr().to_string());
    a.send(msg(1, 2, 42));
    assert_eq!(seq_of(&recv_n(&mut bi, 1).await[0]), 42);
    a.remove_peer(2);
    a.send(msg(1, 2, 43));
    assert_eq!(a.stats().dropped, 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn shutdown_frees_every_task_and_socket() {
    let (a, mut ai) = start(1).await;
    let (b, mut bi) = start(2).await;
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
    a.set_peer(2, b_addr.to_string());
    b.set_peer(1, a_addr.to_string());
    a.send(msg(1, 2, 0));
    b.send(msg(2, 1, 0));
    recv_n(&mut ai, 1).await;
    recv_n(&mut bi, 1).await;
    assert!(a.live_tasks() >= 3, "accept loop, sender, inbound connection");

    tokio::time::timeout(Duration::from_secs(5), a.shutdown()).await.expect("shutdown must return");
    assert_eq!(a.live_tasks(), 0);
    assert!(ai.recv().await.is_none(), "the inbox ends after shutdown");
    a.send(msg(1, 2, 1));
    assert_eq!(a.stats().dropped, 1, "sends after shutdown are dropped");
    // The listener is closed: nothing accepts on its port any more.
    assert!(TcpStream::connect(a_addr).await.is_err(), "listener still open after shutdown");
    // b sees its connection to a close and a's connection to it go away.
    eventually("b notices a is gone", || b.take_unreachable().contains(&1)).await;
    eventually("b's inbound task from a ends", || b.live_tasks() == 2).await;
    b.shutdown().await;
    assert_eq!(b.live_tasks(), 0);
    // Dropping every handle without shutdown also stops the tasks.
    let (c, _ci) = start(3).await;
    let c_addr = c.local_addr();
    drop(c);
    eventually("dropped transport stops listening", || {
        std::net::TcpStream::connect_timeout(&c_addr, Duration::from_millis(100)).is_err()
    })
    .await;
}

#[tokio::test]
async fn a_dialer_that_cannot_prove_the_secret_never_injects_a_message() {
    use eventstreamcore::transport::handshake::{HELLO_FIXED_LEN, Hello, PAKE_MSG_LEN, PROOF_LEN, Role};
    let (b, mut bi) = start(2).await;
    // Speaks the protocol correctly but does not know the secret: a well-formed PAKE message for
    // a guessed secret, no check of b's confirmation, a made-up one of its own, and a frame
    // straight away.
    let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
    let hello =
        Hello { role: Role::Dialer, node_id: 1, nonce: [3; 32], cluster_id: CLUSTER.as_bytes().to_vec() };
    let guess = Local {
        node_id: 1,
        cluster_id: CLUSTER.as_bytes(),
        secret: b"a guess",
        nonce: [3; 32],
        pake_seed: [3; 32],
    };
    let mut first = hello.encode();
    first.extend_from_slice(&handshake::pake_start(Role::Dialer, &guess).1);
    s.write_all(&first).await.unwrap();
    let mut theirs = vec![0u8; HELLO_FIXED_LEN + CLUSTER.len() + PAKE_MSG_LEN + PROOF_LEN];
    s.read_exact(&mut theirs).await.unwrap();
    let mut out = vec![0x5a; PROOF_LEN];
    encode_frame(&msg(1, 2, 0), 1 << 20, &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap();
    assert!(read.is_err() || rest.is_empty(), "b must close without accepting: {rest:?}");
    eventually("forged proof counted", || b.stats().handshake_failures == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(bi.try_recv().is_none());
    let s = b.stats();
    assert_eq!((s.accepted, s.received), (0, 0), "{s:?}");
    b.shutdown().await;
}

fn big_append(from: NodeId, to: NodeId, bytes: usize) -> Message {
    use eventstreamcore::raft::{Entry, EntryKind};
    let entry = Entry { term: 1, index: 1, kind: EntryKind::Normal, data: vec![1u8; bytes].into() };
    Message {
        from,
        to,
        term: 1,
        body: Body::Append { prev_index: 0, prev_term: 0, entries: vec![entry], commit: 0 },
    }
}

#[tokio::test]
async fn a_peer_that_stops_reading_hits_the_write_timeout_and_is_redialled() {
    // A listener that authenticates as node 2, then never reads.
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stuck = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let local = Local {
                node_id: 2,
                cluster_id: CLUSTER.as_bytes(),
                secret: SECRET.as_bytes(),
                nonce: [2; 32],
                pake_seed: [2; 32],
            };
            if handshake::accept(&mut s, &local).await.is_ok() {
                held.push(s);
            }
        }
    });
    let mut cfg = config(1, CLUSTER, SECRET);
    cfg.write_timeout_ms = 200;
    cfg.max_frame_bytes = 2 << 20;
    let (a, _ai) = start_with(cfg, any_port()).await;
    a.set_peer(2, addr.to_string());
    // Larger than a frame may be: dropped by the sender task, counted, the connection unaffected.
    a.send(big_append(1, 2, 3 << 20));
    a.send(msg(1, 2, 0));
    eventually("oversized message dropped, next one sent", || {
        let s = a.stats();
        s.dropped == 1 && s.sent == 1
    })
    .await;
    // 1 MiB messages until the socket buffers are full and a write cannot finish.
    for _ in 0..200 {
        a.send(big_append(1, 2, 1 << 20));
        tokio::time::sleep(Duration::from_millis(2)).await;
        if a.stats().write_timeouts > 0 {
            break;
        }
    }
    eventually("a write timed out", || a.stats().write_timeouts >= 1).await;
    eventually("the stuck peer is reported", || a.take_unreachable() == vec![2]).await;
    eventually("the peer is redialled", || a.stats().reconnects >= 1).await;
    let s = a.stats();
    assert!(s.sent > 0 && s.dropped > 1, "{s:?}");
    a.shutdown().await;
    stuck.abort();
}

#[tokio::test]
async fn a_frame_longer_than_the_limit_closes_the_connection() {
    let (b, mut bi) = start(2).await;
    let mut s = authenticated_raw_client(b.local_addr(), 5, 2).await;
    let mut header = Vec::new();
    header.extend_from_slice(&(17u32 << 20).to_le_bytes()); // 17 MiB > the 16 MiB default
    header.extend_from_slice(&0u32.to_le_bytes());
    s.write_all(&header).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the connection must close: {read:?}");
    assert_eq!(b.stats().bad_frames, 1);
    assert!(bi.try_recv().is_none());
    b.shutdown().await;
}

#[tokio::test]
async fn a_new_connection_from_a_peer_retires_its_silent_old_one() {
    // A peer that vanished without closing (power loss) leaves a half-sent frame behind; when it
    // comes back and dials again, the old connection's task is freed.
    let (b, mut bi) = start(2).await;
    let mut old = authenticated_raw_client(b.local_addr(), 7, 2).await;
    let mut frame = Vec::new();
    encode_frame(&msg(7, 2, 0), 1 << 20, &mut frame).unwrap();
    old.write_all(&frame[..5]).await.unwrap();
    eventually("old connection served", || b.live_tasks() == 2).await;
    let mut new = authenticated_raw_client(b.local_addr(), 7, 2).await;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), old.read(&mut byte)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "the old connection must be closed: {closed:?}");
    eventually("only the new connection is served", || b.live_tasks() == 2).await;
    new.write_all(&frame).await.unwrap();
    assert_eq!(seq_of(&recv_n(&mut bi, 1).await[0]), 0);
    b.shutdown().await;
}

#[tokio::test]
async fn an_authenticated_peer_sending_an_impossible_term_is_refused_counted_and_disconnected() {
    let (b, mut bi) = start(2).await;
    let mut insider = authenticated_raw_client(b.local_addr(), 7, 2).await;
    let mut frames = Vec::new();
    let absurd = Message { from: 7, to: 2, term: u64::MAX, body: Body::Heartbeat { commit: 1, round: 1 } };
    encode_frame(&absurd, 1 << 20, &mut frames).unwrap();
    encode_frame(&msg(7, 2, 5), 1 << 20, &mut frames).unwrap();
    insider.write_all(&frames).await.unwrap();
    insider.flush().await.unwrap();
    eventually("impossible message counted", || b.stats().invalid_messages == 1).await;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), insider.read(&mut byte)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "the connection is closed: {closed:?}");
    assert!(bi.try_recv().is_none(), "nothing after the impossible message is delivered either");
    assert_eq!(b.stats().received, 0);
    b.shutdown().await;
}

/// Issue 11: what each side sends first is blinded by fresh randomness, so two handshakes with
/// the same secret never repeat a message, and the listener's answer to a stranger gives an
/// offline guesser nothing to test the real secret against (the HMAC handshake of version 1 sent
/// HMAC(secret, public values) to anyone who said hello: one recorded answer checked any guess).
#[tokio::test]
async fn handshake_messages_are_blinded_and_give_an_offline_guesser_nothing() {
    use eventstreamcore::transport::handshake::{
        Confirmation, HELLO_FIXED_LEN, Hello, PAKE_MSG_LEN, PROOF_LEN, Role, pake_start,
    };
    // The dialer's first message, twice, as a raw listener sees it.
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let (a, _ai) = start(1).await;
    a.set_peer(2, listener.local_addr().unwrap().to_string());
    let first_len = HELLO_FIXED_LEN + CLUSTER.len() + PAKE_MSG_LEN;
    let mut firsts = Vec::new();
    for _ in 0..2 {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut first = vec![0u8; first_len];
        s.read_exact(&mut first).await.unwrap();
        firsts.push(first[HELLO_FIXED_LEN + CLUSTER.len()..].to_vec());
    }
    assert_ne!(firsts[0], firsts[1], "the dialer's PAKE message repeats");
    a.shutdown().await;

    // The listener's answer to a stranger who guessed, twice.
    let (b, mut bi) = start(2).await;
    let guess = Local {
        node_id: 1,
        cluster_id: CLUSTER.as_bytes(),
        secret: b"a guess",
        nonce: [3; 32],
        pake_seed: [3; 32],
    };
    let hello =
        Hello { role: Role::Dialer, node_id: 1, nonce: [3; 32], cluster_id: CLUSTER.as_bytes().to_vec() };
    let mut answers = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(b.local_addr()).await.unwrap();
        let (_, x) = pake_start(Role::Dialer, &guess);
        let mut first = hello.encode();
        first.extend_from_slice(&x);
        s.write_all(&first).await.unwrap();
        let mut answer = vec![0u8; HELLO_FIXED_LEN + CLUSTER.len() + PAKE_MSG_LEN + PROOF_LEN];
        s.read_exact(&mut answer).await.unwrap();
        answers.push((x, answer));
    }
    let pake_of = |a: &[u8]| a[HELLO_FIXED_LEN + CLUSTER.len()..][..PAKE_MSG_LEN].to_vec();
    assert_ne!(pake_of(&answers[0].1), pake_of(&answers[1].1), "the listener's PAKE message repeats");
    // Offline: the stranger redoes its side for each candidate secret (the real one among them)
    // and checks the recorded confirmation. Only its one online guess could have verified.
    let (x, answer) = &answers[0];
    let (hello_l, rest) = answer.split_at(HELLO_FIXED_LEN + CLUSTER.len());
    let (y, proof) = rest.split_at(PAKE_MSG_LEN);
    for candidate in [SECRET.as_bytes(), b"another", b""] {
        let (state, _) = pake_start(Role::Dialer, &Local { secret: candidate, ..guess });
        let c = Confirmation::new(state, y, &hello.encode(), x, hello_l, y).unwrap();
        assert!(c.verify(Role::Listener, proof).is_err(), "candidate {candidate:?} verified offline");
    }
    eventually("both strangers' handshakes fail", || b.stats().handshake_failures == 2).await;
    assert!(bi.try_recv().is_none());
    b.shutdown().await;
}

/// Issue 11: the receive buffer of a chunked snapshot had no byte cap (an insider could grow it
/// chunk by chunk for ever). A chunk ending past `MAX_SNAPSHOT_BYTES` is refused, counted and
/// its connection closed, like any other impossible message.
#[tokio::test]
async fn a_snapshot_chunk_past_the_size_cap_is_refused_counted_and_disconnected() {
    use eventstreamcore::raft::{ConfState, MAX_SNAPSHOT_BYTES, SnapshotMeta};
    let (b, mut bi) = start(2).await;
    let mut insider = authenticated_raw_client(b.local_addr(), 7, 2).await;
    let mut frames = Vec::new();
    let meta = SnapshotMeta { index: 5, term: 1, conf_state: ConfState::with_voters([2, 7]) };
    let chunk = Body::Snapshot { meta, offset: MAX_SNAPSHOT_BYTES, data: vec![0u8; 16].into(), done: false };
    encode_frame(&Message { from: 7, to: 2, term: 1, body: chunk }, 1 << 20, &mut frames).unwrap();
    insider.write_all(&frames).await.unwrap();
    insider.flush().await.unwrap();
    eventually("oversized chunk counted", || b.stats().invalid_messages == 1).await;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), insider.read(&mut byte)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "the connection is closed: {closed:?}");
    assert!(bi.try_recv().is_none(), "the chunk never reaches the core");
    b.shutdown().await;
}
