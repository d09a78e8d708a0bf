// openai-node against the gateway: `node openai_node.cjs BASE_URL` (NODE_PATH finds the package).
// Prints one JSON line with what a chat completion, a streamed one and a response returned.
const OpenAI = require("openai");

async function main(baseURL) {
  const client = new OpenAI({ baseURL, apiKey: "sk-node", maxRetries: 0 });
  const chat = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "hello node" }],
  });
  let streamed = "";
  const stream = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "stream node" }],
    stream: true,
  });
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
  const response = await client.responses.create({ model: "gpt-4.1", input: "responses node" });
  const followUp = await client.responses.create({
    model: "gpt-4.1",
    input: "[sim:recall] again",
    previous_response_id: response.id,
  });
  console.log(
    JSON.stringify({
      chat: chat.choices[0].message.content,
      streamed,
      response: response.output_text,
      followUp: followUp.output_text,
    }),
  );
}

main(process.argv[2]).catch((error) => {
  console.error(error);
  process.exit(1);
});
