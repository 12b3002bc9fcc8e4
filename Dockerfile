# sealpost image: the same TypeScript sources run through tsx, as in development.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json prisma.config.ts ./
COPY prisma ./prisma
# npm ci runs the package's postinstall, which generates the Prisma client (offline:
# generate never runs the schema engine). tsx and prisma are runtime dependencies.
RUN npm ci --omit=dev && npm cache clean --force
COPY tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY openapi.yaml ./
USER node
ENTRYPOINT ["node", "bin/sealpost.js"]
CMD ["start"]
