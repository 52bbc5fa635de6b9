//! Change events on a real mount: EventBridge → SQS and SNS → SQS through moto, the messages
//! that are not events, and the switch between events and polling.

mod common;

use std::path::Path;
use std::process::Command;

use common::watch::Watch;
use common::{Moto, Mount};

/// Runs Python with boto3 clients `sqs`, `sns` and `events` on moto; returns what it prints.
fn aws(moto: &Moto, script: &str) -> String {
    let prelude = format!(
        "import boto3, json, sys\n\
         kw = dict(endpoint_url='{}', region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\n\
         sqs = boto3.client('sqs', **kw)\n\
         sns = boto3.client('sns', **kw)\n\
         events = boto3.client('events', **kw)\n",
        moto.url()
    );
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
        .args(["-c", &(prelude + script)])
        .output()
        .expect("python with boto3: run scripts/setup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A queue that an EventBridge rule for aws.ssm events feeds; its URL.
fn eventbridge_queue(moto: &Moto, name: &str) -> String {
    aws(
        moto,
        &format!(
            "url = sqs.create_queue(QueueName='{name}')['QueueUrl']\n\
             arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
             events.put_rule(Name='{name}', EventPattern=json.dumps({{'source': ['aws.ssm']}}))\n\
             events.put_targets(Rule='{name}', Targets=[{{'Id': '1', 'Arn': arn}}])\n\
             print(url)\n"
        ),
    )
}

/// Puts an SSM change event on the bus, as SSM would.
fn ssm_event(moto: &Moto, operation: &str, name: &str) {
    aws(
        moto,
        &format!(
            "r = events.put_events(Entries=[{{'Source': 'aws.ssm', 'DetailType': 'Parameter Store Change', \
             'Detail': json.dumps({{'operation': '{operation}', 'name': '{name}', 'type': 'String'}})}}])\n\
             assert r['FailedEntryCount'] == 0, r\n"
        ),
    );
}

/// Messages still on the queue, visible or not.
fn queued(moto: &Moto, url: &str) -> u64 {
    aws(
        moto,
        &format!(
            "a = sqs.get_queue_attributes(QueueUrl='{url}', AttributeNames=['All'])['Attributes']\n\
             print(int(a['ApproximateNumberOfMessages']) + int(a['ApproximateNumberOfMessagesNotVisible']))\n"
        ),
    )
    .parse()
    .unwrap()
}

fn calls(m: &Mount) -> u64 {
    m.calls()
}

/// Waits (bounded) for the mount to say that events flow.
fn wait_flowing(m: &Mount) {
    let log = m.log_with("change events flow");
    assert!(log.contains("change events flow"), "{log}");
}

#[test]
fn an_eventbridge_event_fetches_the_changed_parameter_at_once() {
    let moto = Moto::start();
    moto.put("/app/db/password", "SecureString", "one");
    moto.put("/app/db/user", "String", "app");
    moto.put("/other/x", "String", "not mounted");
    let queue = eventbridge_queue(&moto, "host1");
    let m = Mount::start(
        &moto,
        "/app",
        &["--max-age", "3600", "--events-queue", &queue],
    );
    wait_flowing(&m);
    assert_eq!(m.read_str("db/password"), "one");
    let before = calls(&m);
    let mut watch = Watch::start(&["-e", "close_write"], &[&m.path("db")]);
    moto.put("/app/db/password", "SecureString", "two");
    ssm_event(&moto, "Update", "/app/db/password");
    watch.expect(&[
        "CLOSE_WRITE,CLOSE",
        &m.path("db/password").display().to_string(),
    ]);
    assert_eq!(m.read_str("db/password"), "two", "long before the max age");
    assert_eq!(calls(&m) - before, 1, "one call for one change");
    // Outside the source: nothing fetched. Without the leading slash: the same name.
    ssm_event(&moto, "Update", "/other/x");
    moto.put("/app/db/user", "String", "admin");
    ssm_event(&moto, "Update", "app/db/user");
    watch.expect(&[
        "CLOSE_WRITE,CLOSE",
        &m.path("db/user").display().to_string(),
    ]);
    assert_eq!(calls(&m) - before, 2);
    let stats = m.stats();
    assert_eq!(stats["events"]["mode"], "events");
    assert_eq!(stats["events"]["applied"], 2);
    assert_eq!(stats["events"]["ignored"], 1);
    // A deletion takes the file away; every message was deleted once applied.
    let mut watch = Watch::start(&["-e", "delete"], &[&m.path("db")]);
    moto.delete("/app/db/user");
    ssm_event(&moto, "Delete", "/app/db/user");
    watch.expect(&["DELETE", &m.path("db/user").display().to_string()]);
    assert!(!m.path("db/user").exists());
    assert_eq!(queued(&moto, &queue), 0);
}

#[test]
fn sns_notifications_apply_and_messages_that_are_not_events_are_dropped() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "one");
    let queue = aws(
        &moto,
        "url = sqs.create_queue(QueueName='host')['QueueUrl']\n\
         arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
         topic = sns.create_topic(Name='ssm-changes')['TopicArn']\n\
         sns.subscribe(TopicArn=topic, Protocol='sqs', Endpoint=arn)\n\
         print(url)\n",
    );
    let m = Mount::start(
        &moto,
        "/app",
        &["--max-age", "3600", "--events-queue", &queue],
    );
    wait_flowing(&m);
    assert_eq!(m.read_str("a"), "one");
    // Every kind of garbage first, straight onto the queue; then a good event through SNS.
    aws(
        &moto,
        &format!(
            "url = '{queue}'\n\
             bodies = ['not json', json.dumps({{'some': 'json'}}), \
                 json.dumps({{'Type': 'Notification', 'Message': '{{garbage'}}), \
                 json.dumps({{'source': 'aws.ssm', 'detail-type': 'Parameter Store Change', \
                     'detail': {{'operation': 'Update', 'name': '/app/bad name!'}}}}), \
                 json.dumps({{'x': 'y' * (256 * 1024 - 20)}})]\n\
             for body in bodies: sqs.send_message(QueueUrl=url, MessageBody=body)\n"
        ),
    );
    moto.put("/app/a", "String", "two");
    let mut watch = Watch::start(&["-e", "close_write"], &[&m.path("")]);
    aws(
        &moto,
        "topic = sns.list_topics()['Topics'][0]['TopicArn']\n\
         sns.publish(TopicArn=topic, Message=json.dumps({'source': 'aws.ssm', \
         'detail-type': 'Parameter Store Change', 'detail': {'operation': 'Update', 'name': '/app/a'}}))\n",
    );
    watch.expect(&["CLOSE_WRITE,CLOSE", &m.path("a").display().to_string()]);
    assert_eq!(m.read_str("a"), "two");
    let stats = m.stats();
    assert_eq!(stats["events"]["unparseable"], 4, "{stats}");
    assert_eq!(
        stats["events"]["ignored"], 1,
        "a name SSM cannot hold: {stats}"
    );
    assert_eq!(stats["events"]["applied"], 1);
    assert_eq!(queued(&moto, &queue), 0);
}

#[test]
fn changes_within_the_delay_are_fetched_together() {
    let moto = Moto::start();
    for i in 0..5 {
        moto.put(&format!("/app/p{i}"), "String", "old");
    }
    let queue = eventbridge_queue(&moto, "delayed");
    let m = Mount::start(
        &moto,
        "/app",
        &[
            "--max-age",
            "3600",
            "--events-queue",
            &queue,
            "--events-delay",
            "3",
        ],
    );
    wait_flowing(&m);
    for i in 0..5 {
        assert_eq!(m.read_str(&format!("p{i}")), "old");
    }
    let before = calls(&m);
    let mut watch = Watch::start(&["-e", "close_write"], &[&m.path("")]);
    for i in 0..5 {
        moto.put(&format!("/app/p{i}"), "String", "new");
    }
    aws(
        &moto,
        "events.put_events(Entries=[{'Source': 'aws.ssm', 'DetailType': 'Parameter Store Change', \
         'Detail': json.dumps({'operation': 'Update', 'name': f'/app/p{i}'})} for i in range(5)])\n",
    );
    // In any order.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 5 {
        for line in watch.expect(&["CLOSE_WRITE,CLOSE"]) {
            seen.extend((0..5).filter(|i| line.ends_with(&format!("/p{i}"))));
        }
    }
    assert_eq!(
        calls(&m) - before,
        1,
        "five changes in one GetParameters call"
    );
    assert_eq!(m.stats()["api_calls"]["GetParameters"], 1);
}

#[test]
fn a_queue_that_cannot_be_read_leaves_the_mount_polling_until_it_can() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "one");
    let url = format!("{}/123456789012/later", moto.url());
    let m = Mount::start(&moto, "/app", &["--max-age", "1", "--events-queue", &url]);
    let log = m.log_with("cannot receive");
    assert!(log.contains("change events: cannot receive"), "{log}");
    assert_eq!(m.stats()["events"]["mode"], "polling");
    aws(&moto, "sqs.create_queue(QueueName='later')\n");
    wait_flowing(&m);
    assert_eq!(m.stats()["events"]["mode"], "events");
    assert_eq!(
        m.log().matches("cannot receive").count(),
        1,
        "a failing queue is reported once"
    );
}

#[test]
fn while_events_flow_reads_past_the_max_age_cost_nothing() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "one");
    let queue = eventbridge_queue(&moto, "quiet");
    let m = Mount::start(&moto, "/app", &["--max-age", "1", "--events-queue", &queue]);
    wait_flowing(&m);
    // What was fetched before events flowed is trusted for --max-age only: fetch it anew.
    m.refresh("").unwrap();
    assert_eq!(m.read_str("a"), "one");
    let before = calls(&m);
    // Time passing is what is tested here: twice the max age.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(m.read_str("a"), "one");
    let after = calls(&m);
    // Only while events flow: a receive that failed meanwhile (moto under the load of the whole
    // suite) puts the mount back on --max-age, and says so.
    if after != before && !m.log().contains("cannot receive") {
        panic!(
            "events flowed, yet {} calls were made: {}\n{}",
            after - before,
            m.stats()["api_calls"],
            m.log()
        );
    }
}

#[test]
fn events_topic_makes_a_queue_of_its_own_and_removes_it_on_a_clean_stop() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "one");
    let topic = aws(
        &moto,
        "print(sns.create_topic(Name='ssm-changes')['TopicArn'])\n",
    );
    let mut m = Mount::start(
        &moto,
        "/app",
        &["--max-age", "3600", "--events-topic", &topic],
    );
    wait_flowing(&m);
    let queues = aws(
        &moto,
        "print(' '.join(sqs.list_queues().get('QueueUrls', [])))\n",
    );
    assert!(queues.contains("/ssmfs-"), "{queues}");
    let raw = aws(
        &moto,
        &format!(
            "s = sns.list_subscriptions_by_topic(TopicArn='{topic}')['Subscriptions']\n\
             print(len(s), sns.get_subscription_attributes(SubscriptionArn=s[0]['SubscriptionArn'])\
             ['Attributes'].get('RawMessageDelivery'))\n"
        ),
    );
    assert_eq!(raw, "1 true");
    assert_eq!(m.read_str("a"), "one");
    moto.put("/app/a", "String", "two");
    let mut watch = Watch::start(&["-e", "close_write"], &[&m.path("")]);
    aws(
        &moto,
        &format!(
            "sns.publish(TopicArn='{topic}', Message=json.dumps({{'source': 'aws.ssm', \
             'detail-type': 'Parameter Store Change', 'detail': {{'operation': 'Update', 'name': '/app/a'}}}}))\n"
        ),
    );
    watch.expect(&["CLOSE_WRITE,CLOSE", &m.path("a").display().to_string()]);
    assert_eq!(m.read_str("a"), "two");
    assert!(m.stop_with(libc::SIGTERM).success());
    let left = aws(
        &moto,
        &format!(
            "print(len(sqs.list_queues().get('QueueUrls', [])), \
             len(sns.list_subscriptions_by_topic(TopicArn='{topic}')['Subscriptions']))\n"
        ),
    );
    assert_eq!(left, "0 0", "the queue and its subscription are gone");
}

#[test]
fn a_secret_changed_through_cloudtrail_is_fetched_with_its_keys() {
    let moto = Moto::start();
    let c = moto.secrets_client();
    common::rt()
        .block_on(
            c.create_secret()
                .name("prod/db")
                .secret_string(r#"{"user":"app","password":"one"}"#)
                .send(),
        )
        .unwrap();
    let queue = aws(
        &moto,
        "print(sqs.create_queue(QueueName='sm')['QueueUrl'])\n",
    );
    let m = Mount::start(
        &moto,
        "secretsmanager:prod/",
        &["--max-age", "3600", "--events-queue", &queue],
    );
    wait_flowing(&m);
    assert_eq!(m.read_str("db/password"), "one");
    common::rt()
        .block_on(
            c.put_secret_value()
                .secret_id("prod/db")
                .secret_string(r#"{"user":"app","password":"two"}"#)
                .send(),
        )
        .unwrap();
    let mut watch = Watch::start(&["-e", "close_write"], &[&m.path("db")]);
    // As EventBridge delivers a CloudTrail record of the call, by the secret's ARN.
    aws(
        &moto,
        &format!(
            "arn = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf'\n\
             sqs.send_message(QueueUrl='{queue}', MessageBody=json.dumps({{'source': 'aws.secretsmanager', \
             'detail-type': 'AWS API Call via CloudTrail', 'detail': {{'eventSource': 'secretsmanager.amazonaws.com', \
             'eventName': 'PutSecretValue', 'requestParameters': {{'secretId': arn}}}}}}))\n"
        ),
    );
    watch.expect(&[
        "CLOSE_WRITE,CLOSE",
        &m.path("db/password").display().to_string(),
    ]);
    assert_eq!(m.read_str("db/password"), "two");
    assert_eq!(m.stats()["events"]["applied"], 1);
}

/// Starts `ssmfs -f` at `mnt` and returns once it says that events flow (its standard error is
/// drained from then on).
fn start_flowing(moto: &Moto, mnt: &Path, args: &[&str]) -> std::process::Child {
    use std::io::BufRead;
    let notify = mnt.with_extension("sock");
    let _ = std::fs::remove_file(&notify);
    let (notify_path, _sock) = common::notify_socket_at(&notify);
    let mut child = common::spawn_foreground(&moto.url(), "/app", mnt, args, &notify_path);
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let flowing = lines.any(|l| l.is_ok_and(|l| l.contains("change events flow")));
    assert!(flowing, "events never flowed");
    std::thread::spawn(move || for _ in lines {});
    child
}

#[test]
fn a_queue_left_by_a_killed_daemon_is_reused_by_the_next() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "one");
    let topic = aws(&moto, "print(sns.create_topic(Name='t')['TopicArn'])\n");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let args = ["--events-topic", topic.as_str()];
    let count = || {
        aws(
            &moto,
            &format!(
                "print(len(sqs.list_queues().get('QueueUrls', [])), \
                 len(sns.list_subscriptions_by_topic(TopicArn='{topic}')['Subscriptions']))\n"
            ),
        )
    };
    let mut first = start_flowing(&moto, &mnt, &args);
    first.kill().unwrap();
    first.wait().unwrap();
    // The dead mount goes; its queue and subscription stay behind.
    Command::new("umount").arg("-l").arg(&mnt).status().unwrap();
    assert_eq!(count(), "1 1");
    let mut second = start_flowing(&moto, &mnt, &args);
    assert_eq!(count(), "1 1", "the same queue and subscription, reused");
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    assert!(second.wait().unwrap().success());
    assert_eq!(count(), "0 0");
}
