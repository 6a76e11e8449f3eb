// The payments service's worker (TypeScript SDK, @distorch/sdk): charges the card and
// refunds it when the saga compensates.
//
//   DISTORCH_URL=http://127.0.0.1:8000 node payments.mjs

import { TaskError, Worker } from "@distorch/sdk";

// The card number payment providers use in tests for "declined".
const DECLINED = "4000-0000-0000-0002";

const worker = new Worker({
  url: process.env.DISTORCH_URL ?? "http://127.0.0.1:8000",
  queue: "payments",
  workerId: `typescript-payments-${process.pid}`,
  pollWaitMs: 5_000,
});

worker
  .task("charge-card", async (ctx, input) => {
    if (input.card === DECLINED) {
      // Not retryable: asking again will not change the bank's answer. The step fails and
      // the saga compensates the steps that completed.
      throw TaskError.fatal("card_declined", `card ending ${input.card.slice(-4)} was declined`);
    }
    // Idempotent in a real service: charge with ctx.taskId as the provider's idempotency key.
    return { charge_id: `ch-${input.order_id}`, amount: input.amount, served_by: "typescript" };
  })
  .task("refund-card", async (_ctx, charge) => {
    return { refunded: charge.charge_id, amount: charge.amount, served_by: "typescript" };
  });

await worker.run(); // until SIGINT/SIGTERM, then drains
