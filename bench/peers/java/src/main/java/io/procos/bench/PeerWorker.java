package io.procos.bench;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.camunda.bpm.client.ExternalTaskClient;
import org.camunda.bpm.client.backoff.ExponentialErrorBackoffStrategy;

/**
 * One worker of `bench/run.sh peers` on the official Java external task client: subscribes to one
 * topic, completes every task (after PEER_DELAY_MS, the task body), and records when its handler
 * got each task. The records are written to PEER_PICKUP_FILE when the process is stopped, so that
 * no file write sits on the measured path.
 *
 * <p>Configured as the client's documentation recommends for throughput: long polling
 * (asyncResponseTimeout) with the error-only backoff that the client documents for long polling,
 * and the benchmark's common maxTasks and lock duration. The client runs handlers one after the
 * other on its single fetch thread; that is how it works, not a setting.
 */
public final class PeerWorker {

  private static final List<String> PICKUPS = new ArrayList<>();

  private PeerWorker() {
  }

  public static void main(String[] args) throws IOException {
    String baseUrl = env("PEER_ENGINE_URL");
    String topic = env("PEER_TOPIC");
    String workerId = env("PEER_WORKER_ID");
    int maxTasks = Integer.parseInt(env("PEER_MAX_TASKS"));
    long lockDuration = Long.parseLong(env("PEER_LOCK_DURATION_MS"));
    long longPoll = Long.parseLong(env("PEER_LONG_POLL_MS"));
    long delay = Long.parseLong(env("PEER_DELAY_MS"));
    Path pickupFile = Path.of(env("PEER_PICKUP_FILE"));

    Runtime.getRuntime().addShutdownHook(new Thread(() -> writePickups(pickupFile)));

    ExternalTaskClient client = ExternalTaskClient.create()
        .baseUrl(baseUrl)
        .workerId(workerId)
        .maxTasks(maxTasks)
        .lockDuration(lockDuration)
        .asyncResponseTimeout(longPoll)
        .backoffStrategy(new ExponentialErrorBackoffStrategy())
        .build();
    client.subscribe(topic)
        .lockDuration(lockDuration)
        .handler((task, service) -> {
          long now = System.currentTimeMillis();
          synchronized (PICKUPS) {
            PICKUPS.add(task.getId() + " " + now);
          }
          if (delay > 0) {
            try {
              Thread.sleep(delay);
            } catch (InterruptedException e) {
              Thread.currentThread().interrupt();
              return;
            }
          }
          service.complete(task);
        })
        .open();
    System.out.println("ready camunda-external-task-client " + clientVersion());
    System.out.flush();
  }

  private static String env(String name) {
    String value = System.getenv(name);
    if (value == null || value.isEmpty()) {
      throw new IllegalArgumentException("missing environment variable " + name);
    }
    return value;
  }

  /** The client's version as Maven packaged it, so that the results name what was measured. */
  private static String clientVersion() {
    String resource = "/META-INF/maven/org.camunda.bpm/camunda-external-task-client/pom.properties";
    try (InputStream in = ExternalTaskClient.class.getResourceAsStream(resource)) {
      if (in == null) {
        return "unknown";
      }
      Properties properties = new Properties();
      properties.load(in);
      return properties.getProperty("version", "unknown");
    } catch (IOException e) {
      return "unknown";
    }
  }

  private static void writePickups(Path file) {
    StringBuilder out = new StringBuilder();
    synchronized (PICKUPS) {
      for (String line : PICKUPS) {
        out.append(line).append('\n');
      }
    }
    try {
      Files.writeString(file, out.toString(), StandardCharsets.UTF_8);
    } catch (IOException e) {
      System.err.println("cannot write " + file + ": " + e);
    }
  }
}
