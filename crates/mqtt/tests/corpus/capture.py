"""Captures the bytes real MQTT clients send, for the corpus tests in ../it/corpus.rs.

A tiny in-process MQTT "broker" on a loopback socket answers just enough (CONNACK, SUBACK,
PUBACK, PUBREC, PUBCOMP, UNSUBACK, PINGRESP) for the client to carry on, and writes every packet
the client sent to `<client>-<scenario>-<n>-<type>.hex` beside this script. The clients:
paho-mqtt (Python), mosquitto_pub/mosquitto_sub (Debian's mosquitto-clients) and the npm `mqtt`
package (MQTT.js). Re-run with:

    python3 -m venv /tmp/mqttcap-venv && /tmp/mqttcap-venv/bin/pip install paho-mqtt
    apt-get install mosquitto-clients
    (mkdir -p /tmp/mqttcap-npm && cd /tmp/mqttcap-npm && npm init -y && npm install mqtt@5)
    /tmp/mqttcap-venv/bin/python capture.py
"""

import os
import socket
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = {1: "connect", 3: "publish", 6: "pubrel", 8: "subscribe", 10: "unsubscribe", 12: "pingreq",
         14: "disconnect", 15: "auth", 4: "puback", 5: "pubrec", 7: "pubcomp"}


def read_packet(conn):
    first = conn.recv(1)
    if not first:
        return None
    header = bytearray(first)
    remaining, multiplier = 0, 1
    while True:
        more = conn.recv(1)
        if not more:
            return None
        byte = more[0]
        header.append(byte)
        remaining += (byte & 0x7F) * multiplier
        multiplier *= 128
        if byte & 0x80 == 0:
            break
    body = b""
    while len(body) < remaining:
        chunk = conn.recv(remaining - len(body))
        if not chunk:
            return None
        body += chunk
    return bytes(header) + body


def serve(listener, packets, version):
    conn, _ = listener.accept()
    while True:
        packet = read_packet(conn)
        if packet is None:
            break
        packets.append(packet)
        kind = packet[0] >> 4
        # Skip the fixed header to reach the variable header.
        at = 1
        while packet[at] & 0x80:
            at += 1
        at += 1
        if kind == 1:
            conn.sendall(b"\x20\x03\x00\x00\x00" if version == 5 else b"\x20\x02\x00\x00")
        elif kind == 8:
            packet_id = packet[at:at + 2]
            # Count filters: walk past properties (v5) then filter + options byte.
            pos = at + 2
            if version == 5:
                length, shift = 0, 0
                while True:
                    byte = packet[pos]
                    pos += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if byte & 0x80 == 0:
                        break
                pos += length
            codes = b""
            while pos < len(packet):
                n = int.from_bytes(packet[pos:pos + 2], "big")
                pos += 2 + n
                codes += bytes([packet[pos] & 0x03])
                pos += 1
            body = packet_id + (b"\x00" if version == 5 else b"") + codes
            conn.sendall(bytes([0x90, len(body)]) + body)
        elif kind == 3:
            qos = (packet[0] >> 1) & 3
            n = int.from_bytes(packet[at:at + 2], "big")
            packet_id = packet[at + 2 + n:at + 4 + n]
            if qos == 1:
                conn.sendall(b"\x40\x02" + packet_id)
            elif qos == 2:
                conn.sendall(b"\x50\x02" + packet_id)
        elif kind == 6:
            conn.sendall(b"\x70\x02" + packet[at:at + 2])
        elif kind == 10:
            packet_id = packet[at:at + 2]
            if version == 5:
                conn.sendall(b"\xb0\x04" + packet_id + b"\x00\x00")
            else:
                conn.sendall(b"\xb0\x02" + packet_id)
        elif kind == 12:
            conn.sendall(b"\xd0\x00")
        elif kind == 14:
            break
    conn.close()


def run(name, version, script, prefix="paho"):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    packets = []
    thread = threading.Thread(target=serve, args=(listener, packets, version))
    thread.start()
    if prefix == "paho":
        protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tw-{name}", protocol=protocol)
        script(client, port)
    else:
        script(port)
    thread.join(timeout=5)
    listener.close()
    for idx, packet in enumerate(packets):
        kind = NAMES.get(packet[0] >> 4, str(packet[0] >> 4))
        with open(os.path.join(HERE, f"{prefix}-{name}-{idx}-{kind}.hex"), "w") as out:
            out.write(packet.hex() + "\n")


def connect(client, port, **kwargs):
    client.connect("127.0.0.1", port, keepalive=30, **kwargs)
    client.loop_start()
    time.sleep(0.3)


def finish(client):
    time.sleep(0.3)
    client.disconnect()
    time.sleep(0.2)
    client.loop_stop()


def v311_basic(client, port):
    client.username_pw_set("device-17", "s3cret")
    client.will_set("devices/17/status", b"offline", qos=1, retain=True)
    connect(client, port)
    client.subscribe([("sport/tennis/+", 0), ("sport/#", 1), ("$SYS/broker/load", 2)])
    client.publish("sport/tennis/player1", b"score 15-0", qos=0)
    client.publish("sport/tennis/player1", b"score 30-0", qos=1)
    client.publish("sport/tennis/player1", b"game", qos=2, retain=True)
    client.unsubscribe(["sport/#"])
    finish(client)


def v5_rich(client, port):
    client.username_pw_set("device-42", b"\x00\x01binary-pw")
    will_props = Properties(PacketTypes.WILLMESSAGE)
    will_props.WillDelayInterval = 10
    will_props.ContentType = "text/plain"
    will_props.UserProperty = ("reason", "power")
    client.will_set("devices/42/status", b"gone", qos=2, retain=False, properties=will_props)
    conn_props = Properties(PacketTypes.CONNECT)
    conn_props.SessionExpiryInterval = 3600
    conn_props.ReceiveMaximum = 20
    conn_props.MaximumPacketSize = 65536
    conn_props.TopicAliasMaximum = 10
    conn_props.RequestResponseInformation = 1
    conn_props.UserProperty = ("region", "eu-west")
    connect(client, port, clean_start=True, properties=conn_props)
    sub_props = Properties(PacketTypes.SUBSCRIBE)
    sub_props.SubscriptionIdentifier = 7
    client.subscribe([
        ("sport/tennis/+", SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True,
                                           retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)),
        ("$share/group1/sensors/#", SubscribeOptions(qos=2)),
    ], properties=sub_props)
    pub_props = Properties(PacketTypes.PUBLISH)
    pub_props.PayloadFormatIndicator = 1
    pub_props.MessageExpiryInterval = 120
    pub_props.ResponseTopic = "replies/42"
    pub_props.CorrelationData = b"\x01\x02\x03"
    pub_props.UserProperty = [("k1", "v1"), ("k1", "v2"), ("trace", "abc")]
    pub_props.ContentType = "application/json"
    client.publish("sensors/42/temp", b'{"c":21.5}', qos=1, properties=pub_props)
    alias_props = Properties(PacketTypes.PUBLISH)
    alias_props.TopicAlias = 3
    client.publish("sensors/42/hum", b"40", qos=2, properties=alias_props)
    client.publish("sensors/42/plain", b"", qos=0)
    unsub_props = Properties(PacketTypes.UNSUBSCRIBE)
    unsub_props.UserProperty = ("why", "done")
    client.unsubscribe(["sport/tennis/+", "$share/group1/sensors/#"], properties=unsub_props)
    time.sleep(0.3)
    disc_props = Properties(PacketTypes.DISCONNECT)
    disc_props.SessionExpiryInterval = 0
    disc_props.ReasonString = "bye"
    client.disconnect(reasoncode=mqtt.ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection"),
                      properties=disc_props)
    time.sleep(0.2)
    client.loop_stop()


def v5_minimal(client, port):
    connect(client, port, clean_start=False)
    client.publish("a/b", b"x", qos=0)
    finish(client)


def mosquitto_pub_v311(port):
    subprocess.run(["mosquitto_pub", "-V", "mqttv311", "-p", str(port), "-i", "tw-mosq-pub", "-k", "45",
                    "-u", "meter-9", "-P", "pw", "--will-topic", "meters/9/lwt", "--will-payload", "dead",
                    "--will-qos", "2", "-q", "1", "-r", "-t", "meters/9/kwh", "-m", "12.5"],
                   check=True, timeout=10)


def mosquitto_pub_v5(port):
    subprocess.run(["mosquitto_pub", "-V", "mqttv5", "-p", str(port), "-i", "tw-mosq-pub5", "-c",
                    "-x", "300",
                    "-D", "connect", "receive-maximum", "5",
                    "-D", "connect", "user-property", "fw", "1.2.3",
                    "-D", "publish", "message-expiry-interval", "60",
                    "-D", "publish", "content-type", "text/plain",
                    "-D", "publish", "user-property", "unit", "kWh",
                    "-D", "publish", "payload-format-indicator", "1",
                    "-q", "2", "-t", "meters/9/kwh", "-m", "12.5"],
                   check=True, timeout=10)


def mosquitto_sub_v5(port):
    subprocess.run(["mosquitto_sub", "-V", "mqttv5", "-p", str(port), "-i", "tw-mosq-sub5", "-W", "1",
                    "-q", "1", "-t", "meters/+/kwh", "-t", "$share/billing/meters/#",
                    "-D", "subscribe", "subscription-identifier", "42"],
                   timeout=10)


MQTTJS = r"""
const mqtt = require('mqtt');
const client = mqtt.connect('mqtt://127.0.0.1:' + process.argv[2], {
  protocolVersion: 5, clientId: 'tw-mqttjs', keepalive: 20, clean: true, username: 'dev', password: 'pw',
  properties: { sessionExpiryInterval: 120, receiveMaximum: 10, topicAliasMaximum: 4,
                requestProblemInformation: false, userProperties: { app: 'tw' } },
  will: { topic: 'dev/1/will', payload: Buffer.from('bye'), qos: 1, retain: false,
          properties: { willDelayInterval: 5, messageExpiryInterval: 30 } },
});
client.on('connect', async () => {
  await client.subscribeAsync({ 'cmd/1/#': { qos: 2, nl: true, rap: false, rh: 2 } },
                              { properties: { subscriptionIdentifier: 9 } });
  await client.publishAsync('tele/1/state', '{"on":true}',
    { qos: 1, properties: { responseTopic: 'cmd/1/resp', correlationData: Buffer.from([9, 8]),
                            userProperties: { a: '1', b: ['2', '3'] } } });
  await client.unsubscribeAsync('cmd/1/#');
  await client.endAsync({ reasonCode: 0 });
});
"""


def mqttjs_v5(port):
    script = os.path.join("/tmp/mqttcap-npm", "capture.js")
    with open(script, "w") as out:
        out.write(MQTTJS)
    subprocess.run(["node", script, str(port)], cwd="/tmp/mqttcap-npm", check=True, timeout=20)


if __name__ == "__main__":
    run("v311-basic", 4, v311_basic)
    run("v5-rich", 5, v5_rich)
    run("v5-minimal", 5, v5_minimal)
    run("v311-pub", 4, mosquitto_pub_v311, prefix="mosquitto")
    run("v5-pub", 5, mosquitto_pub_v5, prefix="mosquitto")
    run("v5-sub", 5, mosquitto_sub_v5, prefix="mosquitto")
    run("v5-client", 5, mqttjs_v5, prefix="mqttjs")
