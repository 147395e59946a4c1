package io.procos.engine;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;

/** Boots the Camunda 7.24 process engine with its REST API and webapps, laid out like Camunda Run. */
@SpringBootApplication
public class ProcosEngine {
  public static void main(String[] args) {
    SpringApplication.run(ProcosEngine.class, args);
  }
}
