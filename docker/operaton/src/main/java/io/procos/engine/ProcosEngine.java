package io.procos.engine;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;

/**
 * Boots the Operaton process engine with its REST API and webapps, laid out like the Camunda 7.24
 * engine in docker/camunda.
 */
@SpringBootApplication
public class ProcosEngine {
  public static void main(String[] args) {
    SpringApplication.run(ProcosEngine.class, args);
  }
}
