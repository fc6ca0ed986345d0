use kendynet::{Actor, Context, NetEvent, System, WPacket};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

struct Echo;
impl Actor for Echo {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        if let NetEvent::Packet { sock, packet } = ev {
            let _ = sock.send(WPacket::from(packet));
        }
    }
}

#[test]
fn echo_round_trip() {
    let system = System::builder().workers(2).build().unwrap();
    let echo = system.spawn(Echo);
    let addr = system
        .listen("127.0.0.1:0".parse().unwrap(), &echo)
        .unwrap();
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..100u32 {
        let mut p = WPacket::new();
        p.write_u32(i).write_str("hello");
        let frame = p.into_frame();
        c.write_all(&frame).unwrap();
        let mut back = vec![0u8; frame.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back[..], &frame[..]);
    }
    drop(c);
    let report = system.shutdown(Duration::from_secs(5));
    assert!(report.graceful, "{report:?}");
}
