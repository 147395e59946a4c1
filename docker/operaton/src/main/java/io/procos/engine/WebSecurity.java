package io.procos.engine;

import static org.springframework.security.web.util.matcher.AntPathRequestMatcher.antMatcher;

import org.operaton.bpm.engine.rest.security.auth.ProcessEngineAuthenticationFilter;
import org.operaton.bpm.engine.rest.security.auth.impl.ContainerBasedAuthenticationProvider;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.boot.web.servlet.FilterRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.core.annotation.Order;
import org.springframework.http.HttpMethod;
import org.springframework.security.config.Customizer;
import org.springframework.security.config.annotation.web.builders.HttpSecurity;
import org.springframework.security.config.annotation.web.configurers.AbstractHttpConfigurer;
import org.springframework.security.config.http.SessionCreationPolicy;
import org.springframework.security.web.SecurityFilterChain;

/**
 * OAuth2 on the REST API, the way engines behind a gateway are reached: with an issuer configured
 * (Spring Boot's own {@code spring.security.oauth2.resourceserver.jwt.issuer-uri}, env {@code
 * SPRING_SECURITY_OAUTH2_RESOURCESERVER_JWT_ISSUER_URI}, and optionally {@code …jwt.audiences}),
 * {@code /engine-rest} takes only that issuer's signed, unexpired JWTs (keys from the issuer's
 * discovery document, fetched on first use, so the engine boots before its issuer does). The
 * token's subject becomes the engine's authenticated user (the engine's container-based
 * authentication), so the user operation log names the client. {@code GET /engine-rest/engine}
 * answers without a token, as with basic authentication: it is the readiness probe. Cockpit and
 * the other webapps keep their own login either way.
 *
 * <p>Spring Security is on the class path for this, so without an issuer every request must be
 * let through explicitly: otherwise Boot's default would put a login form in front of everything.
 */
@Configuration
public class WebSecurity {
  static final String ISSUER = "spring.security.oauth2.resourceserver.jwt.issuer-uri";

  @Bean
  @Order(1)
  @ConditionalOnProperty(name = ISSUER)
  SecurityFilterChain restApiTakesTokens(HttpSecurity http) throws Exception {
    http.securityMatcher(antMatcher("/engine-rest/**"))
        .authorizeHttpRequests(
            requests ->
                requests
                    .requestMatchers(antMatcher(HttpMethod.GET, "/engine-rest/engine"))
                    .permitAll()
                    .anyRequest()
                    .authenticated())
        .oauth2ResourceServer(server -> server.jwt(Customizer.withDefaults()))
        .sessionManagement(
            sessions -> sessions.sessionCreationPolicy(SessionCreationPolicy.STATELESS))
        // A token, not a cookie, authenticates each call: there is no session to forge.
        .csrf(AbstractHttpConfigurer::disable);
    return http.build();
  }

  /** The token's subject as the engine's authenticated user for the call. */
  @Bean
  @ConditionalOnProperty(name = ISSUER)
  FilterRegistrationBean<ProcessEngineAuthenticationFilter> restTokenUser() {
    FilterRegistrationBean<ProcessEngineAuthenticationFilter> registration =
        new FilterRegistrationBean<>(new ProcessEngineAuthenticationFilter());
    registration.setName("operaton-rest-token-user");
    registration.addInitParameter(
        "authentication-provider", ContainerBasedAuthenticationProvider.class.getName());
    registration.addUrlPatterns("/engine-rest/*");
    return registration;
  }

  /**
   * Everything else, and the REST API when no issuer is configured: let through untouched. The
   * webapps authenticate and set their own headers and CSRF cookie; basic authentication on the
   * REST API is the engine's filter (RestAuthentication), not Spring Security's.
   */
  @Bean
  @Order(2)
  SecurityFilterChain everythingElse(HttpSecurity http) throws Exception {
    http.authorizeHttpRequests(requests -> requests.anyRequest().permitAll())
        .csrf(AbstractHttpConfigurer::disable)
        .headers(AbstractHttpConfigurer::disable)
        .requestCache(AbstractHttpConfigurer::disable)
        .securityContext(AbstractHttpConfigurer::disable)
        .sessionManagement(AbstractHttpConfigurer::disable)
        .anonymous(AbstractHttpConfigurer::disable);
    return http.build();
  }
}
