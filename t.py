from confluent_kafka import Producer, Consumer
import sys
for mech in ["PLAIN","SCRAM-SHA-256","SCRAM-SHA-512"]:
    for pw in ["admin-secret","wrong"]:
        p = Producer({"bootstrap.servers":"127.0.0.1:19092","security.protocol":"SASL_PLAINTEXT","sasl.mechanism":mech,"sasl.username":"admin","sasl.password":pw, "message.timeout.ms": 5000})
        results=[]
        p.produce("t1", b"hello", callback=lambda e,m: results.append(e))
        p.flush(8)
        print(mech, pw, results)
