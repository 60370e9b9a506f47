package troupe.bench;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams peer of troupe's count step (README: Performance): for each input
 * record, read the key's count from a persistent RocksDB store (changelog
 * logging on, the Streams default), add one, write it back and emit the new
 * count (8-byte big-endian long) to the output topic under the same key.
 * Values are opaque bytes: unlike troupe's step, this peer does not decode or
 * encode Avro.
 *
 * <pre>
 * java -cp CLASSPATH troupe.bench.CountStreams --brokers host:port,... \
 *     --input T --output T2 --app-id ID \
 *     --guarantee exactly_once_v2|at_least_once --state-dir DIR [--threads N]
 * </pre>
 *
 * It prints {@code RUNNING} on stdout once the instance first reaches
 * RUNNING, logs WARN and above to stderr, and runs until SIGTERM, which
 * closes the instance (committing what it processed). It exits 1 if the
 * instance fails.
 */
public final class CountStreams {
    static final String STORE = "counts";

    /** One output per input: get, increment, put, forward. */
    static final class CountProcessor implements FixedKeyProcessor<String, byte[], Long> {
        private FixedKeyProcessorContext<String, Long> context;
        private KeyValueStore<String, Long> store;

        @Override
        public void init(FixedKeyProcessorContext<String, Long> context) {
            this.context = context;
            this.store = context.getStateStore(STORE);
        }

        @Override
        public void process(FixedKeyRecord<String, byte[]> record) {
            String key = record.key();
            if (key == null) {
                return; // troupe's records are always keyed by instance id
            }
            Long prev = store.get(key);
            long next = (prev == null ? 0L : prev) + 1L;
            store.put(key, next);
            context.forward(record.withValue(next));
        }
    }

    private static void usage(String msg) {
        System.err.println("CountStreams: " + msg);
        System.err.println("usage: CountStreams --brokers host:port,... --input T --output T2 --app-id ID"
                + " --guarantee exactly_once_v2|at_least_once --state-dir DIR [--threads N]");
        System.exit(2);
    }

    public static void main(String[] args) throws InterruptedException {
        // slf4j-simple reads this when the first logger is made: WARN and
        // above, to stderr, so stdout carries only our RUNNING line.
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        System.setProperty("org.slf4j.simpleLogger.showDateTime", "true");
        // The benchmark puts the state dir under the OS temp dir on purpose.
        System.setProperty("org.slf4j.simpleLogger.log.org.apache.kafka.streams.processor.internals.StateDirectory", "error");

        String brokers = null, input = null, output = null, appId = null, guarantee = null, stateDir = null;
        int threads = 1;
        for (int i = 0; i < args.length; i++) {
            String flag = args[i];
            if (i + 1 >= args.length) {
                usage("flag " + flag + " needs a value");
            }
            String v = args[++i];
            switch (flag) {
                case "--brokers": brokers = v; break;
                case "--input": input = v; break;
                case "--output": output = v; break;
                case "--app-id": appId = v; break;
                case "--guarantee": guarantee = v; break;
                case "--state-dir": stateDir = v; break;
                case "--threads":
                    try {
                        threads = Integer.parseInt(v);
                    } catch (NumberFormatException e) {
                        usage("--threads " + v + ": not a number");
                    }
                    if (threads < 1) {
                        usage("--threads must be at least 1");
                    }
                    break;
                default: usage("unknown flag " + flag);
            }
        }
        if (brokers == null || input == null || output == null || appId == null || guarantee == null || stateDir == null) {
            usage("--brokers, --input, --output, --app-id, --guarantee and --state-dir are required");
        }
        if (!guarantee.equals(StreamsConfig.EXACTLY_ONCE_V2) && !guarantee.equals(StreamsConfig.AT_LEAST_ONCE)) {
            usage("--guarantee " + guarantee + ": want " + StreamsConfig.EXACTLY_ONCE_V2 + " or " + StreamsConfig.AT_LEAST_ONCE);
        }

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        // troupe's step commits every 100 ms; so does the peer (the Streams
        // default is 100 ms under exactly-once but 30 s under at-least-once).
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        // No record cache: every input is written to the store and forwarded
        // at once, never coalesced (the store below has caching off anyway).
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        // No global stores here; set only to silence a startup warning (it
        // becomes the default in Kafka 5.0).
        p.put(StreamsConfig.PROCESSING_EXCEPTION_HANDLER_GLOBAL_ENABLED_CONFIG, true);

        StreamsBuilder b = new StreamsBuilder();
        // Persistent RocksDB store; logging (the changelog topic) is on by
        // default, caching off by default.
        b.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.Long()));
        b.stream(input, Consumed.with(Serdes.String(), Serdes.ByteArray()))
                .processValues(CountProcessor::new, STORE)
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));

        KafkaStreams streams = new KafkaStreams(b.build(), p);
        CountDownLatch done = new CountDownLatch(1);
        AtomicBoolean announced = new AtomicBoolean();
        AtomicBoolean failed = new AtomicBoolean();
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING && announced.compareAndSet(false, true)) {
                System.out.println("RUNNING");
                System.out.flush();
            }
            if (now == KafkaStreams.State.ERROR) {
                failed.set(true);
                done.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("CountStreams: stream thread failed: " + e);
            e.printStackTrace();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(15));
            done.countDown();
        }, "count-streams-shutdown"));

        streams.start();
        done.await();
        if (failed.get()) {
            System.err.println("CountStreams: Kafka Streams is in state ERROR; exiting");
            streams.close(Duration.ofSeconds(15));
            System.exit(1);
        }
    }
}
