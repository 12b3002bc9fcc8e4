# sealpost image: Node 24 LTS runs the TypeScript sources itself (erasable syntax only),
# so the container's PID 1 is the sealpost process and receives SIGTERM from `docker stop`.
FROM node:24-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json prisma.config.ts ./
COPY prisma ./prisma
# npm ci runs the package's postinstall, which generates the Prisma client (offline:
# generate never runs the schema engine). prisma is a runtime dependency for that.
RUN npm ci --omit=dev && npm cache clean --force
COPY tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY openapi.yaml ./
# Named volumes mounted here start out owned by the image's user, so the development data
# key and CA (try-it profile) can be written.
RUN mkdir -p data certs && chown node:node data certs
USER node
# exec form without a shell or wrapper: node is PID 1 and handles SIGTERM itself.
ENTRYPOINT ["node", "--max-semi-space-size=8", "--heap-growing-percent=50", "bin/sealpost.js"]
CMD ["start"]
