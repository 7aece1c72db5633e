# Tandem in a container: Debian slim with Node 20, running as the unprivileged user "tandem".
# Build:  docker build -t tandem .
# Run:    docker run -d --name tandem -p 25:25 -p 8025:8025 \
#           -v /srv/tandem/etc:/etc/tandem:ro -v tandem-spool:/var/spool/tandem tandem
# The config is /etc/tandem/tandem.yaml (TANDEM_CONFIG); it should listen on 0.0.0.0:25 with
# spool.root: /var/spool/tandem, tracking.path: /var/log/tandem/tracking.log and
# admin.listen: 0.0.0.0:8025 (the health check asks http://127.0.0.1:8025/health; another port:
# set TANDEM_HEALTH_URL). Details: docs/operations.md, "Container".
FROM node:20-bookworm-slim

ENV NODE_ENV=production \
    TANDEM_CONFIG=/etc/tandem/tandem.yaml \
    TANDEM_HEALTH_URL=http://127.0.0.1:8025/health

WORKDIR /opt/tandem

# dependencies first, so that a code change does not reinstall them (tsx is a runtime dependency)
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY bin ./bin
COPY src ./src
COPY deploy ./deploy
COPY docs ./docs
COPY README.md LICENSE ./

RUN groupadd --system tandem \
    && useradd --system --gid tandem --home-dir /var/lib/tandem --shell /usr/sbin/nologin tandem \
    && install -d -o tandem -g tandem /var/spool/tandem /var/log/tandem /var/lib/tandem /etc/tandem

USER tandem
VOLUME ["/var/spool/tandem"]
EXPOSE 25 8025

# 200 only while the node accepts mail (starting, draining, fenced: 503)
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["node", "-e", "fetch(process.env.TANDEM_HEALTH_URL).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# SIGTERM (docker stop) finishes deliveries in flight: give it time (docker stop -t 90)
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/tandem/bin/tandem"]
CMD ["start"]
