//! A bare AMQP 0-9-1 publisher that writes header tables as given bytes:
//! how a hostile or foreign client sends what lapin's own encoder (recursive,
//! on its I/O thread's stack) cannot, such as tables nested thousands of
//! levels deep. Plain blocking TCP, PLAIN authentication, no confirms: the
//! connection's close handshake returns after the broker routed the messages.

use std::io::{Read, Write};
use std::net::TcpStream;

const METHOD: u8 = 1;
const HEADER: u8 = 2;
const BODY: u8 = 3;
const FRAME_END: u8 = 0xCE;

/// A message to publish: correlation id (also the body) and the encoded
/// header table (its 4-byte length included).
pub struct RawMessage {
    pub correlation_id: String,
    pub headers: Vec<u8>,
}

/// Publishes `messages` in order to `exchange` with `routing_key` on the
/// broker of `url` (an `amqp://` URL), then closes the connection.
pub fn publish(url: &str, exchange: &str, routing_key: &str, messages: &[RawMessage]) {
    let uri: lapin::uri::AMQPUri = url.parse().expect("an AMQP URL");
    let authority = &uri.authority;
    let mut socket =
        TcpStream::connect((authority.host.as_str(), authority.port)).expect("connect to RabbitMQ");
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    socket
        .write_all(b"AMQP\x00\x00\x09\x01")
        .expect("protocol header");
    expect_method(&mut socket, 10, 10); // connection.start
    let mut start_ok = method(10, 11);
    start_ok.extend(0u32.to_be_bytes()); // client properties: none
    short(&mut start_ok, "PLAIN");
    let user = &authority.userinfo;
    long(
        &mut start_ok,
        format!("\0{}\0{}", user.username, user.password).as_bytes(),
    );
    short(&mut start_ok, "en_US");
    send(&mut socket, METHOD, 0, &start_ok);
    let tune = expect_method(&mut socket, 10, 30);
    let mut tune_ok = method(10, 31);
    tune_ok.extend(&tune[..6]); // channel_max and frame_max as offered
    tune_ok.extend(0u16.to_be_bytes()); // no heartbeats
    send(&mut socket, METHOD, 0, &tune_ok);
    let mut open = method(10, 40);
    short(&mut open, &uri.vhost);
    short(&mut open, "");
    open.push(0);
    send(&mut socket, METHOD, 0, &open);
    expect_method(&mut socket, 10, 41);
    let mut channel_open = method(20, 10);
    short(&mut channel_open, "");
    send(&mut socket, METHOD, 1, &channel_open);
    expect_method(&mut socket, 20, 11);
    for message in messages {
        let mut publish = method(60, 40);
        publish.extend(0u16.to_be_bytes());
        short(&mut publish, exchange);
        short(&mut publish, routing_key);
        publish.push(0);
        send(&mut socket, METHOD, 1, &publish);
        let body = message.correlation_id.as_bytes();
        let mut header = 60u16.to_be_bytes().to_vec();
        header.extend(0u16.to_be_bytes()); // weight
        header.extend((body.len() as u64).to_be_bytes());
        // Property flags: headers (bit 13) and correlation-id (bit 10), in
        // that order on the wire.
        header.extend((0x2000u16 | 0x0400).to_be_bytes());
        header.extend(&message.headers);
        short(&mut header, &message.correlation_id);
        send(&mut socket, HEADER, 1, &header);
        send(&mut socket, BODY, 1, body);
    }
    let mut close = method(10, 50);
    close.extend(200u16.to_be_bytes());
    short(&mut close, "done");
    close.extend([0, 0, 0, 0]);
    send(&mut socket, METHOD, 0, &close);
    expect_method(&mut socket, 10, 51);
}

/// A header table holding one entry, `name`, whose value is tables (or
/// arrays) nested `depth` levels deep, encoded without recursion.
pub fn nested_header(name: &str, depth: usize, arrays: bool) -> Vec<u8> {
    let mut value = vec![b'V']; // void, innermost
    for _ in 0..depth {
        let mut level = Vec::with_capacity(value.len() + 16);
        if arrays {
            level.push(b'A');
            level.extend((value.len() as u32).to_be_bytes());
        } else {
            level.push(b'F');
            level.extend(((value.len() + 2) as u32).to_be_bytes());
            short(&mut level, "n");
        }
        level.extend(&value);
        value = level;
    }
    let mut table = Vec::new();
    short(&mut table, name);
    table.extend(&value);
    let mut encoded = (table.len() as u32).to_be_bytes().to_vec();
    encoded.extend(table);
    encoded
}

fn method(class: u16, method: u16) -> Vec<u8> {
    let mut payload = class.to_be_bytes().to_vec();
    payload.extend(method.to_be_bytes());
    payload
}

fn short(out: &mut Vec<u8>, text: &str) {
    out.push(u8::try_from(text.len()).expect("a short string"));
    out.extend(text.as_bytes());
}

fn long(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as u32).to_be_bytes());
    out.extend(bytes);
}

fn send(socket: &mut TcpStream, kind: u8, channel: u16, payload: &[u8]) {
    let mut frame = vec![kind];
    frame.extend(channel.to_be_bytes());
    frame.extend((payload.len() as u32).to_be_bytes());
    frame.extend(payload);
    frame.push(FRAME_END);
    socket.write_all(&frame).expect("write a frame");
}

/// Reads frames until a method frame, which must be `class.method`; its
/// arguments.
fn expect_method(socket: &mut TcpStream, class: u16, method: u16) -> Vec<u8> {
    let mut head = [0u8; 7];
    socket.read_exact(&mut head).expect("a frame header");
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let mut payload = vec![0u8; size + 1];
    socket.read_exact(&mut payload).expect("a frame payload");
    payload.pop();
    let got = (
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
    );
    assert_eq!(
        (head[0], got),
        (METHOD, (class, method)),
        "unexpected frame from RabbitMQ: {:?}",
        String::from_utf8_lossy(&payload)
    );
    payload.split_off(4)
}
