package io.procos.engine;

import org.operaton.bpm.engine.rest.security.auth.ProcessEngineAuthenticationFilter;
import org.operaton.bpm.engine.rest.security.auth.impl.HttpBasicAuthenticationProvider;
import org.springframework.boot.autoconfigure.condition.ConditionalOnExpression;
import org.springframework.boot.web.servlet.FilterRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * HTTP basic authentication on the REST API, switched by the property Camunda Run uses
 * ({@code camunda.bpm.run.auth.enabled}, env {@code CAMUNDA_BPM_RUN_AUTH_ENABLED}), so that
 * ProcOS's configuration for the Camunda engine works unchanged, or by Operaton Run's own name
 * for it ({@code operaton.bpm.run.auth.enabled}, env {@code OPERATON_BPM_RUN_AUTH_ENABLED}):
 * either switches it on. The filter lets {@code GET /engine-rest/engine} through without
 * credentials, which is what readiness checks rely on. An OAuth2 issuer, when one is configured
 * (WebSecurity), takes its place: a bearer token is no basic credential.
 */
@Configuration
@ConditionalOnExpression(
    "(${camunda.bpm.run.auth.enabled:false} or ${operaton.bpm.run.auth.enabled:false})"
        + " and '${spring.security.oauth2.resourceserver.jwt.issuer-uri:}' == ''")
public class RestAuthentication {
  @Bean
  public FilterRegistrationBean<ProcessEngineAuthenticationFilter> restAuthenticationFilter() {
    FilterRegistrationBean<ProcessEngineAuthenticationFilter> registration =
        new FilterRegistrationBean<>(new ProcessEngineAuthenticationFilter());
    registration.setName("operaton-rest-authentication");
    registration.addInitParameter(
        "authentication-provider", HttpBasicAuthenticationProvider.class.getName());
    registration.addUrlPatterns("/engine-rest/*");
    return registration;
  }
}
