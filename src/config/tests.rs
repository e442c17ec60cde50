use super::*;

#[test]
fn probe() {
    let env = |_: &str| None;
    for text in [
        "fuse:\n  dir: /x\nlease:\n  type: static\n  candidate: maybe\n",
        "fuse:\n  dir: /x\nlease:\n  type: static\n  candidat: true\n",
        "fuse:\n  dir: /x\nlease:\n  hostname: a\n  candidate: true\n",
        "data:\n  retention: soon\nlease:\n  type: static\n",
        "fuse:\n  dir: /x\n",
        "",
        "exec:\n  - cmd: a\n  - if-candidate: true\nlease:\n  type: static\n",
        "exec:\n  - cmd: a\n  - cmd: b\n    bogus: true\nlease:\n  type: static\n",
        "exec: [1, 2]\nlease:\n  type: static\n",
        "lease:\n  type: static\n  candidate: false\n",
        "lease:\n  type: consul\n  consul:\n    key: x\n",
        "lease:\n  type: zk\n",
        "lease:\n  type: static\n  x: [\n",
        "lease:\n  type: static\n  hostname: $H\n",
        "log:\n  format: xml\nlease:\n  type: static\n",
    ] {
        match Config::parse(text, Path::new("/etc/litefs.yml"), &env) {
            Ok(c) => println!("OK {c:?}"),
            Err(e) => println!("ERR key={:?} line={:?}\n{e}\n=====", e.key(), e.line()),
        }
    }
}
