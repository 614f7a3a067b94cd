/**
 * A customer-service dialogue dataset that the project writes itself, for the `npm start` demo:
 * multi-turn chats between a shop's customers and its support agents, each user turn labelled
 * with an intent and an emotion. Nothing is downloaded; the same seed gives the same dialogues on
 * every machine.
 *
 *   generateSupportDialogues (seeded, one Rng stream per dialogue)
 *     -> splitDialogues (train/test by conversation, never by utterance)
 *     -> dialogueExamples ({ text, label, context, group } rows for fineTune)
 *
 * How a dialogue is made: 2-6 user turns. An optional greeting, then one or more topics, each
 * opened by a request of one intent (templates with slots: order numbers, products, dates,
 * cities, amounts, codes), sometimes followed by a short answer to the agent's question ("It's
 * #482913") or a follow-up ("what about the other one?") that carries the topic's intent but
 * says nothing about it: those turns need the context. Then an optional goodbye. The agent
 * answers every user turn from templates of the same intent.
 *
 * The emotion is drawn per turn (sticky across a dialogue, mildly skewed by intent) and written
 * into the turn with openers, closers and punctuation that do not depend on the intent, so the
 * two labels are learnable separately. A share of emotional turns carries no marker at all, and
 * turns get lowercased or a typo now and then, so neither task is solvable by keyword lookup.
 *
 * @example
 * ```ts
 * const dialogues = generateSupportDialogues({ seed: 1 });
 * const { train, test } = splitDialogues(dialogues, { testFraction: 0.2, seed: 1 });
 * const trainSet = dialogueExamples(train, { field: 'intent', contextTurns: 2 });
 * // trainSet[1]: {
 * //   text: 'Hello again, has my refund gone through yet?', label: 'refund_status', group: 'support-1-0000',
 * //   context: ['Hi, I need some help.', 'Hello! How can I help you today?'],
 * // }
 * ```
 */
import { InputError, expected } from '../errors';
import type { Example } from '../train/data';
import { Rng } from '../train/rng';

/** One turn of a dialogue. `intent` and `emotion` are set on user turns only. */
export interface DialogueTurn {
  speaker: 'user' | 'agent';
  text: string;
  intent?: string;
  emotion?: string;
}

/** One conversation; `id` depends only on the seed and the dialogue's index. */
export interface Dialogue {
  id: string;
  turns: DialogueTurn[];
}

/** Options of {@link generateSupportDialogues}. */
export interface GenerateSupportDialoguesOptions {
  /** Any safe integer; default 1. */
  seed?: number;
  /** How many dialogues; default 600. Dialogue i is the same whatever the count. */
  dialogues?: number;
}

/** Options of {@link splitDialogues}. */
export interface SplitDialoguesOptions {
  /** Share of the dialogues for the test set, in [0, 1], rounded to whole dialogues. */
  testFraction: number;
  seed: number;
}

/** Options of {@link dialogueExamples}. */
export interface DialogueExamplesOptions {
  /** Which label of the user turns becomes the example's `label`. */
  field: 'intent' | 'emotion';
  /**
   * How many earlier turns (user and agent) go into `context`, oldest first; default 2, the
   * previous exchange. 0 leaves `context` out.
   */
  contextTurns?: number;
}

/** One user turn as a fine-tuning example: an {@link Example} of a `'sequence'` task. */
export interface DialogueExample extends Example {
  text: string;
  label: string;
  /** Earlier turns, oldest first; empty for a dialogue's first turn. */
  context?: string[];
  /** The dialogue id, for splits that keep a conversation on one side. */
  group: string;
}

// ------------------------------------------------------------------------------------------------
// Labels

/**
 * The intents, in a fixed order. The confusable neighbours are on purpose: order status vs a late
 * delivery, return vs refund, damaged vs wrong item, payment method vs declined card, password
 * vs locked account, opening hours vs store location.
 */
export const SUPPORT_INTENTS: readonly string[] = [
  'greeting',
  'check_order_status',
  'delivery_delayed',
  'cancel_order',
  'change_address',
  'return_item',
  'refund_status',
  'damaged_item',
  'wrong_item',
  'update_payment',
  'card_declined',
  'reset_password',
  'account_locked',
  'speak_to_human',
  'opening_hours',
  'store_location',
  'product_availability',
  'apply_discount',
  'unsubscribe',
  'goodbye',
];

/** The emotions, `neutral` first (the most common). */
export const SUPPORT_EMOTIONS: readonly string[] = [
  'neutral',
  'frustrated',
  'angry',
  'confused',
  'worried',
  'grateful',
];

// ------------------------------------------------------------------------------------------------
// Templates
//
// `[a|b|c]` picks one alternative (an empty one allowed), `{slot}` a slot value. Slot values are
// drawn once per topic, so the agent's reply names the order number the user gave.

type SlotKind = 'order' | 'email' | 'city' | 'product' | 'card' | 'code';

interface IntentTemplates {
  /** What the user says to open the topic. */
  requests: readonly string[];
  /** What the agent says to resolve it. */
  replies: readonly string[];
  /** An agent question asking for a slot, answered by a context-dependent user turn. */
  ask?: { slot: SlotKind; questions: readonly string[] };
  /** Asks for information only: no "yes, please do that" follow-ups. */
  informational?: boolean;
  /** Multipliers on the base emotion weights. */
  emotionSkew?: Readonly<Partial<Record<string, number>>>;
}

const INTENT_TEMPLATES: Readonly<Record<string, IntentTemplates>> = {
  greeting: {
    requests: [
      'Hi',
      'Hello',
      'Hey there',
      'Good morning',
      'Hi, is anyone there?',
      'Hello?',
      'Good afternoon',
      'Hiya',
      'Hi, I need some help.',
      'Hello, can you help me?',
      'Hey, anyone around?',
      'Good evening',
      'hi there, are you online?',
      'Hello, is this the support chat?',
    ],
    replies: [
      'Hello! How can I help you today?',
      'Hi there, what can I do for you?',
      "Hi! I'm here, what do you need help with?",
      'Good to hear from you. How can I help?',
    ],
    emotionSkew: { neutral: 2, grateful: 1.5, confused: 0.5 },
  },
  check_order_status: {
    requests: [
      'Where is my order {order}?',
      'Can you tell me the status of order {order}?',
      "I placed an order {date} and haven't heard anything since. Has it shipped?",
      'Has my {product} been dispatched yet?',
      "I'd like an update on my order[ please|].",
      "What's happening with order {order}?",
      'Could you track my package for me?',
      'Any news on the {product} I bought {date}?',
      'how do I see where my parcel is',
      'Is order {order} on its way?',
      'Check the status of my order, the number is {order}.',
      'When will my {product} arrive?',
      'I want to know if my order has left the warehouse.',
      "Tracking says 'label created' for {order}, what does that mean?",
      'Just wondering when my order will get here.',
    ],
    replies: [
      'Order {order} left our warehouse {date} and should reach you {deadline}.',
      "I can see it's out for delivery today.",
      "It's packed and waiting for the courier; you'll get a tracking email shortly.",
      "Your {product} shipped {date}. Tracking shows it's at the local depot.",
      "It's with the courier now, expected {deadline}.",
    ],
    ask: {
      slot: 'order',
      questions: [
        "Happy to check. What's the order number?",
        'Could you give me the order number, please?',
        'Sure, which order is this about?',
      ],
    },
    informational: true,
    emotionSkew: { worried: 1.3 },
  },
  delivery_delayed: {
    requests: [
      "My order {order} was supposed to arrive {date} and it's still not here.",
      "The {product} is late. It said 2-3 days and it's been {days} days.",
      'Why is my delivery taking so long?',
      "The tracking hasn't moved since {date}.",
      'My parcel is overdue[ by {days} days|].',
      'Delivery was due {date}, nothing has shown up.',
      'The courier keeps pushing the delivery date back.',
      "It's been over a week and order {order} still hasn't been delivered.",
      'I paid for express shipping and the package is still not here.',
      'Is there a delay on deliveries to {city} at the moment?',
      'My order is stuck in transit.',
      'The estimated delivery date came and went and I have nothing.',
      'I was told {order} would come yesterday, where is it?',
      "Still waiting on my {product}, it's way past the delivery date.",
    ],
    replies: [
      "I'm sorry it's late. The courier has a backlog in your area; the new estimate is {deadline}.",
      "I've raised a trace with the courier and will email you within 48 hours.",
      "The parcel was held at the depot. I've asked them to send it out {deadline}.",
      "If it hasn't arrived by {deadline}, we'll send a replacement free of charge.",
    ],
    ask: {
      slot: 'order',
      questions: [
        'Sorry about the wait. Can I have the order number?',
        "Let me look into it. What's the order number?",
      ],
    },
    emotionSkew: { frustrated: 2, angry: 1.5, worried: 1.5, grateful: 0.5 },
  },
  cancel_order: {
    requests: [
      'I want to cancel order {order}.',
      'Please cancel my order[ for the {product}|].',
      'Can I still cancel something I ordered {date}?',
      'I changed my mind about the {product}, can you stop the order before it ships?',
      'How do I cancel an order?',
      'Cancel {order} please.',
      'I ordered the {product} by mistake, I need to cancel it.',
      'Is it too late to cancel my order?',
      "I don't want the {product} anymore, please don't send it.",
      'Can you call off my order? I found it cheaper elsewhere.',
      "I'd like to cancel the order I just placed.",
      'There are two identical orders on my account, please cancel one of them.',
      'Stop my order {order} from shipping.',
      'I need to cancel, the order went through twice.',
    ],
    replies: [
      "Done, order {order} is cancelled and you'll get a confirmation email.",
      "I've cancelled it. The refund of {amount} will go back to your card in 3-5 working days.",
      "It has already shipped, so I can't cancel it, but you can return it once it arrives.",
      "The cancellation is in. You won't be charged.",
    ],
    ask: {
      slot: 'order',
      questions: ['Which order would you like to cancel?', 'Can you give me the order number so I can cancel it?'],
    },
  },
  change_address: {
    requests: [
      'I need to change the delivery address on order {order}.',
      'I moved to {city}, can you update my shipping address?',
      'Can the {product} be sent to a different address?',
      'I typed the wrong street name on my order.',
      'Please send my order to my work address instead.',
      'How do I change my address?',
      'Can I update the postcode on an order I already placed?',
      'The address on {order} is my old one, can you fix it?',
      'Is it possible to redirect my parcel to {city}?',
      "I'd like to add a flat number to my delivery address.",
      'Update my address to {house} {street}, {city} please.',
      "Could you deliver to my neighbour's house instead?",
      "I won't be home, can I change where order {order} goes?",
    ],
    replies: [
      "I've updated the delivery address on order {order}.",
      'Done, it will now go to the new address in {city}.',
      "It's already with the courier, so I've asked them to redirect it; that can take a day longer.",
      'The address is changed for future orders too.',
    ],
    ask: { slot: 'order', questions: ['Which order should I change the address on?', "What's the order number?"] },
    emotionSkew: { worried: 1.3 },
  },
  return_item: {
    requests: [
      "I'd like to return the {product}.",
      'How do I send back an item?',
      "The {product} doesn't fit, can I return it?",
      'Can I get a return label for order {order}?',
      'I want to return something I bought {date}.',
      "What's your return policy?",
      "I don't like the {product}, how do I send it back?",
      'Is it too late to return the {product}? I got it {date}.',
      'Can I return an item in store in {city}?',
      'I need to send back part of order {order}.',
      'please help me return my {product}',
      'Do I have to pay for return shipping?',
      "The {product} isn't what I expected, I want to return it.",
      'Can I exchange the {product} for a different size?',
    ],
    replies: [
      "I've emailed you a prepaid return label. Please send it back within 30 days.",
      'You can return it at any of our stores or by post; the label is in your account under Orders.',
      "Sure, I've started the return for the {product}. Drop it at any post office.",
      'Returns are free within 30 days as long as the item is unused.',
    ],
    ask: { slot: 'product', questions: ['Which item would you like to return?', 'What is it you want to send back?'] },
    emotionSkew: { confused: 1.2 },
  },
  refund_status: {
    requests: [
      'Where is my refund?',
      "I sent back the {product} {date} and still haven't got my money.",
      'When will I get my refund for order {order}?',
      "You said I'd be refunded {amount}, but nothing has come through.",
      'How long do refunds take?',
      'My return was delivered {date}, has the refund been processed?',
      'I was only refunded {amount}, it should have been more.',
      'Has my refund gone through yet?',
      "The refund isn't showing on my card.",
      'I cancelled order {order} {date}, when do I get the money back?',
      'Can you check on my refund please?',
      "It's been {days} days since you received my return and no refund.",
      "I'm still waiting for {amount} back from you.",
      'Was the refund sent to my original payment method?',
    ],
    replies: [
      'The refund of {amount} was issued {date}; banks usually take 3-5 working days.',
      'Your return is still being checked at the warehouse; the refund will follow within 48 hours.',
      'I can see the refund went to your original payment method {date}.',
      "I've chased the refund with our finance team and marked it urgent.",
    ],
    ask: {
      slot: 'order',
      questions: ['Could you tell me the order number for that refund?', 'Which order was the return for?'],
    },
    emotionSkew: { frustrated: 1.5, worried: 1.5 },
  },
  damaged_item: {
    requests: [
      'My {product} arrived broken.',
      'The box was crushed and the {product} inside is damaged.',
      'The {product} I received has a crack in it.',
      'Order {order} came damaged, what can you do?',
      'The {product} stopped working after one day.',
      "There's a big scratch on the {product}.",
      'Part of the {product} snapped off as I took it out of the box.',
      'The {product} arrived wet and stained.',
      'My order was delivered but the item is in pieces.',
      "The {product} is faulty, it won't turn on.",
      'What do I do if something arrives damaged?',
      'The packaging was torn open and the {product} is dented.',
      "i got my {product} today and it's broken",
      'Can I get a replacement? The {product} came smashed.',
    ],
    replies: [
      "I'm sorry it arrived like that. I've sent a replacement {product}, no need to return the damaged one.",
      "Could you send a photo of the damage? Then I'll refund you straight away.",
      "I've arranged a free collection of the damaged item and a full refund.",
      'A replacement is on its way and should arrive {deadline}.',
    ],
    ask: { slot: 'order', questions: ["I'm sorry to hear that. What's the order number?", 'Which order was it?'] },
    emotionSkew: { angry: 2, frustrated: 1.5, grateful: 0.4 },
  },
  wrong_item: {
    requests: [
      'I ordered the {product} but received a {product2}.',
      'You sent me the wrong item.',
      "This isn't what I ordered.",
      "Order {order} has someone else's items in it.",
      'I got the {product} in the wrong size.',
      'The colour is wrong, I ordered {color} and got {color2}.',
      'My package had a {product2} instead of my {product}.',
      "The item in the box doesn't match my order.",
      'I received two of the {product} and no {product2}.',
      'Wrong product delivered for order {order}.',
      "You've sent me a {product2}, I never ordered that.",
      "The label says {product} but it's a completely different thing.",
      "I think my order got mixed up with someone else's.",
      'what I got is not what I paid for',
    ],
    replies: [
      "Sorry for the mix-up. I've sent out the right item and emailed a label for the wrong one.",
      'That was a picking error on our side. The correct {product} will arrive {deadline}.',
      'Please keep the other item; the correct one is on its way.',
      "I've logged the error and booked a courier to swap the items.",
    ],
    ask: { slot: 'order', questions: ['Sorry about that! Which order was it?', 'Can I have the order number?'] },
    emotionSkew: { angry: 1.5, frustrated: 1.5, confused: 1.3 },
  },
  update_payment: {
    requests: [
      'I want to change the card on my account.',
      'How do I add a new payment method?',
      'Please update my card details, my old one expired.',
      'Can I pay with PayPal instead?',
      "I'd like to remove {card} from my account.",
      'My bank sent me a new card, how do I update it?',
      'Can I switch the payment on order {order} to a different card?',
      'Where do I change my billing details?',
      'Set {card} as my default payment, please.',
      'I need to update the billing address for my card.',
      'Can I split the payment between two cards?',
      'My card number changed, can you update it for my subscription?',
      'How do I delete a saved card?',
    ],
    replies: [
      "You can change it under Account > Payment methods. I've also sent you a secure link.",
      'Done, the new card is now your default payment method.',
      "I've removed the old card from your account.",
      "For security I can't take card numbers here, but the link I've sent lets you update it.",
    ],
    ask: {
      slot: 'card',
      questions: ['Which card would you like to use instead?', 'Which card should I remove or replace?'],
    },
    emotionSkew: { confused: 1.3 },
  },
  card_declined: {
    requests: [
      'My card keeps getting declined.',
      'Payment failed when I tried to check out.',
      "Why was {card} rejected? There's money on it.",
      "I can't pay for my order, it says 'transaction declined'.",
      "The checkout won't accept my card.",
      'I tried three times to pay {amount} and it fails every time.',
      "It says my payment couldn't be processed.",
      "My bank says everything's fine but your site declines the card.",
      'Card declined error when ordering the {product}.',
      'Was I charged? The payment said it failed.',
      "Why won't my payment go through?",
      '{card} is being declined, but it works everywhere else.',
      'I keep getting a payment error at checkout.',
      'The site took {amount} but said the payment failed.',
    ],
    replies: [
      "The payment was declined by your bank's fraud check; a quick call to them usually clears it.",
      "I can see the attempts failed before any money was taken, so you haven't been charged.",
      "Please check the billing address matches the card exactly, that's the usual cause.",
      'Your bank may have put a temporary hold on the amount; it will drop off within a few days.',
    ],
    ask: { slot: 'card', questions: ['Which card were you using?', 'What kind of card was it?'] },
    emotionSkew: { frustrated: 1.5, confused: 1.5, worried: 1.3 },
  },
  reset_password: {
    requests: [
      'I forgot my password.',
      'How do I reset my password?',
      'The password reset email never arrives.',
      "I can't remember my login details.",
      'Can you send me a password reset link to {email}?',
      'The reset link says it has expired.',
      'I want to change my password.',
      "My password isn't working, I think I've forgotten it.",
      "How do I get back into my account? I don't know the password anymore.",
      "The new password I set isn't being accepted.",
      "Where is the 'forgot password' option?",
      'I need a new password for {email}.',
      'Can I change my password from the app?',
    ],
    replies: [
      "I've sent a reset link to the email on your account; it's valid for one hour.",
      'Please check your spam folder, the reset email sometimes lands there.',
      "Use 'Forgot password' on the sign-in page and follow the link we email you.",
      "I've sent a fresh link; the old ones no longer work.",
    ],
    ask: {
      slot: 'email',
      questions: ['What email address is the account under?', 'Can you confirm the email on your account?'],
    },
    emotionSkew: { confused: 1.8, frustrated: 1.3 },
  },
  account_locked: {
    requests: [
      'My account has been locked.',
      'It says my account is suspended.',
      'I got locked out after too many attempts.',
      'Why has my account been blocked?',
      "I can't log in, it says the account is disabled.",
      'Can you unlock my account? The email is {email}.',
      "My account was frozen for 'suspicious activity', I didn't do anything.",
      "I'm locked out and the reset doesn't help.",
      'It says to contact support to reactivate my account.',
      'How long does an account lock last?',
      'My account under {email} is restricted, why?',
      "I entered the wrong code and now I can't get in at all.",
      "Every time I log in it says 'account on hold'.",
    ],
    replies: [
      "Your account was locked after several failed sign-ins. I've unlocked it now.",
      'For security it stays locked for 30 minutes, then you can try again.',
      "I've verified your details and reactivated the account.",
      "Our security team flagged a login from a new device; I've cleared the hold.",
    ],
    ask: {
      slot: 'email',
      questions: ['Can you confirm the email on the account?', 'Which email do you use to log in?'],
    },
    emotionSkew: { worried: 1.5, frustrated: 1.5, angry: 1.3 },
  },
  speak_to_human: {
    requests: [
      'Can I speak to a real person?',
      'I want to talk to a human.',
      'Put me through to an agent please.',
      'Is there a phone number I can call?',
      'Are you a bot? I need someone real.',
      'Connect me with customer service.',
      "I'd rather talk to someone on the phone.",
      'Can a manager contact me?',
      'Transfer me to a human agent.',
      'I need to speak to someone about order {order}.',
      'Let me talk to your supervisor.',
      'Please get a person to call me back.',
      'agent',
      'Can I chat with an actual member of staff?',
    ],
    replies: [
      "I'll transfer you to a colleague now; the wait is about {days} minutes.",
      'You can call us on 0800 123 456, 8am to 8pm.',
      "I've booked a callback from a team member within the next hour.",
      "Sure, I'm passing this chat to a member of our team.",
    ],
    emotionSkew: { frustrated: 2, angry: 2 },
  },
  opening_hours: {
    requests: [
      'What time do you open?',
      'Are you open on {weekday}?',
      'When does the {city} store close?',
      'What are your opening hours?',
      'Is the shop open late on {weekday}?',
      'Are you open on bank holidays?',
      'What time does customer service close?',
      'Can I come in at 8am tomorrow?',
      'How late is the {city} branch open tonight?',
      'Do you open on Sundays?',
      'What are the hours for the store in {city}?',
      'Is the phone line open at the weekend?',
      'Until what time can I pick up my order today?',
    ],
    replies: [
      "We're open 9am to 6pm Monday to Saturday, and 10am to 4pm on Sundays.",
      'The {city} store is open until 8pm on {weekday}.',
      'Customer service is available 8am to 8pm every day.',
      'On bank holidays most stores open 10am to 4pm.',
    ],
    ask: { slot: 'city', questions: ['Which store do you mean?', 'Which branch are you asking about?'] },
    informational: true,
    emotionSkew: { neutral: 1.6, grateful: 1.2 },
  },
  store_location: {
    requests: [
      'Where is your nearest store?',
      'Do you have a shop in {city}?',
      "What's the address of the {city} store?",
      'Is there a branch near me?',
      'How do I find your store?',
      'Where can I pick up my order in {city}?',
      'Is there parking at the {city} shop?',
      'Which store is closest to {city}?',
      'Do you have any locations outside {city}?',
      'Is the {city} store still open or did it move?',
      'Where exactly are you in {city}?',
      'Can I see the {product} in a store somewhere near {city}?',
      'I need directions to your shop.',
    ],
    replies: [
      'Our {city} store is on {street}, next to the train station.',
      'The nearest branch is in {city}, about 15 minutes away.',
      'All our stores are on the store finder page; the closest to {city} is on {street}.',
      "We don't have a shop in {city} yet, but you can order online with free click and collect.",
    ],
    ask: { slot: 'city', questions: ['Which area are you in?', 'Where are you based?'] },
    informational: true,
    emotionSkew: { neutral: 1.6, confused: 1.2 },
  },
  product_availability: {
    requests: [
      'Is the {product} in stock?',
      'When will the {product} be available again?',
      'Do you have the {product} in {color}?',
      'Do you have the {product} in size {size}?',
      'The {product} says out of stock, will it come back?',
      'Can I preorder the {product}?',
      'Is the {product} available in the {city} store?',
      'Do you still sell the {product}?',
      'How many units of the {product} do you have left?',
      'Will you restock the {product} in {color}?',
      'Can you let me know when the {product} is back?',
      'Do you carry the {product} in larger sizes?',
      "I can't find the {product} on your website anymore.",
      'Is the {color} {product} sold out everywhere?',
    ],
    replies: [
      'The {product} is back in stock from {deadline}.',
      "It's available online in {color}, and the {city} store has two left.",
      "That one's sold out, but I can email you when it's restocked.",
      "Yes, it's in stock and ships within 24 hours.",
    ],
    ask: { slot: 'product', questions: ['Which product are you looking for?', 'Which item do you mean?'] },
    informational: true,
    emotionSkew: { neutral: 1.4, grateful: 1.3 },
  },
  apply_discount: {
    requests: [
      "My discount code isn't working.",
      'How do I use a promo code?',
      "The code {code} says it's invalid.",
      'I forgot to add my discount code, can you apply it to order {order}?',
      'Can I use {code} on sale items?',
      'Where do I enter a voucher?',
      'I have a coupon for {amount} off, how do I use it?',
      "The checkout didn't take off my {percent}% discount.",
      'Is there a student discount?',
      'Can you apply {code} to my order please?',
      'The promo code expired yesterday, can you still honour it?',
      "I got a voucher by email but it won't apply.",
      'Can I combine two discount codes?',
    ],
    replies: [
      "I've applied the code and refunded the difference of {amount}.",
      "That code has expired, but I've added a 10% discount to your order instead.",
      "Enter the code in the 'Promo code' box on the basket page, before payment.",
      "Codes can't be combined, but I've applied the one that saves you most.",
    ],
    ask: { slot: 'code', questions: ["What's the code you're trying to use?", 'Which code is it?'] },
    emotionSkew: { confused: 1.5, frustrated: 1.3 },
  },
  unsubscribe: {
    requests: [
      'Please stop sending me emails.',
      'How do I unsubscribe from your newsletter?',
      'Take me off your mailing list.',
      'I keep getting marketing texts, I want them to stop.',
      'Unsubscribe {email} from everything.',
      "I clicked unsubscribe but I'm still getting emails.",
      'Can you remove me from promotional messages?',
      "I don't want any more offers sent to {email}.",
      'How do I turn off notifications from you?',
      'Stop the spam please.',
      'I never signed up for these emails.',
      'Opt me out of marketing.',
      'Can I cancel my newsletter subscription?',
    ],
    replies: [
      "Done, you've been removed from all marketing emails. It can take up to 48 hours.",
      "I've turned off marketing emails and texts for your account.",
      'You can also manage this under Account > Communication preferences.',
      "You're unsubscribed; you'll still get emails about your orders.",
    ],
    ask: {
      slot: 'email',
      questions: ['Which email address should I remove?', "What's the email address you want unsubscribed?"],
    },
    emotionSkew: { angry: 1.5, frustrated: 1.5 },
  },
  goodbye: {
    requests: [
      "Thanks, that's all.",
      "That's everything, bye.",
      'OK, bye.',
      'Thank you, have a good day.',
      "Great, that's all I needed.",
      "No, that's it.",
      'Cheers, bye.',
      'Ok thanks',
      "That's all for now.",
      'Thanks for your help.',
      'Got it, thanks.',
      'Nothing else, thank you.',
      'Alright, goodbye.',
      "Fine, I'll leave it there.",
    ],
    replies: [
      "You're welcome! Have a great day.",
      'Thanks for chatting with us. Take care!',
      'Glad I could help. Bye for now!',
      'Happy to help, have a good one.',
    ],
    emotionSkew: { grateful: 3, neutral: 1.2, frustrated: 0.5, angry: 0.5, confused: 0.3, worried: 0.5 },
  },
};

/** The intents a topic can be about (all but the greeting and the goodbye). */
const TOPIC_INTENTS = SUPPORT_INTENTS.filter((i) => i !== 'greeting' && i !== 'goodbye');

/** The user's short reply to an agent question for a slot: the intent is only in the context. */
const ANSWERS: Readonly<Record<SlotKind, readonly string[]>> = {
  order: [
    "It's {order}.",
    '{order}',
    'Order number {order}.',
    'Sure, {order}.',
    "I think it's {order}.",
    '{order} I believe',
    'The number is {order}.',
    'Here you go: {order}',
    'It should be {order}.',
    'one sec... {order}',
    '{order}, I placed it {date}.',
    "It's {order}, the one with the {product}.",
  ],
  email: [
    '{email}',
    "It's {email}.",
    'The account is under {email}.',
    'I use {email}.',
    '{email} I think',
    'Should be {email}.',
    'My email is {email}.',
    "It's registered to {email}.",
    '{email}, thanks',
    'Try {email}.',
    'either {email} or my work one',
  ],
  city: [
    '{city}',
    "I'm in {city}.",
    'The one in {city}.',
    'Near {city} city centre.',
    'Around {city}.',
    '{city}, please.',
    'I live just outside {city}.',
    'The {city} one.',
    "I'm based in {city}.",
    '{city} area',
    "Probably {city}, that's closest.",
  ],
  product: [
    'The {product}.',
    "It's the {product}.",
    '{product}',
    'The {color} {product}.',
    'The {product} in size {size}.',
    'Just the {product}.',
    'The {product} I bought {date}.',
    "it's a {product}",
    'The {product}, the {color} one.',
    '{product}, size {size}',
  ],
  card: [
    '{card}',
    "It's {card}.",
    'I was using {card}.',
    '{card} I think',
    'Just {card}.',
    'Try {card}.',
    'The same as always, {card}.',
    '{card}, the one I always use.',
    'It was {card}.',
    '{card}, thanks',
    'Use {card} from now on.',
  ],
  code: [
    '{code}',
    "It's {code}.",
    'The code is {code}.',
    '{code}, from your email.',
    'I tried {code}.',
    'Code {code}',
    "It's {code}, it was in the newsletter.",
    '{code} - it says valid until the end of the month.',
    "I think it's {code}.",
    '{code}, all capitals',
  ],
};

/** Follow-ups that fit any topic: the intent is that of the topic's request, in the context. */
const FOLLOW_UPS: readonly string[] = [
  'What about the other one?',
  'Could you check again?',
  'How long will that take?',
  'And what happens next?',
  'So what do I do now?',
  "And if that doesn't work?",
  'Are you sure?',
  'Could you double check that?',
  'Hmm ok, and after that?',
  'Is there anything else I need to do?',
  'Wait, what does that mean?',
  'ok and then?',
];

/** Follow-ups that agree to an action the agent offered or took. */
const ACTION_FOLLOW_UPS: readonly string[] = [
  '[Yes|Yeah|Ok], please do that.',
  'Sure, go ahead.',
  'ok do it',
  'Yes please.',
  'That one too.',
  'Can you do that now?',
  'Please go ahead with that.',
  'Will that definitely work?',
];

/** Follow-ups that name another slot value of the same kind. */
const SLOT_FOLLOW_UPS: Readonly<Partial<Record<SlotKind, readonly string[]>>> = {
  order: [
    'Can you do the same for {order2}?',
    'And the other order?',
    'Same for my other order[ please|].',
    'Alright, and the second one?',
    'What about {order2}?',
    'I have another order with the same problem, {order2}.',
  ],
  city: ['And the one in {city2}?', 'What about {city2}?', 'Same question for {city2}.'],
  product: ['What about the {product2}?', 'And in {color2}?', 'Same for the {product2}?'],
};

/** Emotion markers: openers before and closers after the request, independent of the intent. */
const EMOTION_MARKERS: Readonly<Record<string, { openers: readonly string[]; closers: readonly string[] }>> = {
  neutral: {
    openers: ['Hi,', 'Hello,', 'Hey,', 'Quick question:', 'Good morning,', 'Hi there,', 'Hello again,', 'Question:'],
    closers: ['Thanks.', 'Thank you.', 'Thanks in advance.', 'Let me know.', 'Regards.', 'Cheers.'],
  },
  frustrated: {
    openers: [
      'Ugh,',
      'Seriously,',
      'Come on,',
      'Honestly,',
      "This is the third time I'm asking.",
      "I've already explained this twice.",
      'Not again.',
      "I've been going round in circles.",
      'This is getting really tiresome.',
      "I've been waiting ages.",
      'Still nothing.',
      'Sigh.',
      'Look,',
      'Once again,',
      "I've tried everything already.",
    ],
    closers: [
      'This is taking way too long.',
      'I just want this sorted.',
      'Why is this so difficult?',
      'Please just fix it.',
      "I've wasted enough time on this.",
      'Getting fed up now.',
      'Can we get this done please.',
      "It shouldn't be this hard.",
      "I'm running out of patience.",
      "Every time it's something.",
    ],
  },
  angry: {
    openers: [
      'This is ridiculous!',
      'Absolutely unacceptable.',
      "I'm furious.",
      'What a joke.',
      'Are you kidding me?',
      "Worst service I've ever had.",
      'I am so angry right now.',
      'Unbelievable.',
      'This is a disgrace.',
      'How hard can it be?!',
      "I'm fed up with this company.",
      'You people are useless.',
    ],
    closers: [
      'I want this fixed NOW.',
      "I'll be leaving a review about this.",
      'Never ordering from you again.',
      "Fix it or I'm disputing the charge.",
      'This is outrageous.',
      'Sort it out!',
      'Absolutely pathetic.',
      'I expect compensation.',
      "Don't give me another scripted answer.",
      "I'm done being patient.",
    ],
  },
  confused: {
    openers: [
      "I'm a bit lost here.",
      "Sorry, I don't quite get it,",
      'Not sure if this is the right place, but',
      "I'm confused,",
      "Maybe I'm missing something, but",
      'Um,',
      'Sorry if this is a silly question,',
      "I don't understand,",
      "I'm not sure how this works:",
      'Hmm,',
      "I can't figure this out.",
      "The website isn't clear about this.",
    ],
    closers: [
      'Does that make sense?',
      "I'm not sure what I'm supposed to do.",
      'Can you explain?',
      'Am I doing something wrong?',
      "I don't get how this works.",
      "Sorry, I'm not very good with this stuff.",
      'Is that normal?',
      'Which option should I pick?',
      "I'm really not sure.",
      "The instructions don't make sense to me.",
    ],
  },
  worried: {
    openers: [
      "I'm a bit worried,",
      "I'm getting nervous.",
      "I'm really concerned,",
      "I'm starting to panic a little.",
      'Please help,',
      "I'm anxious about this,",
      'Hoping you can help,',
      'This is stressing me out.',
      'Oh no,',
      "I'm quite worried about this one.",
      "Sorry to bother you, I'm worried:",
      'Urgent:',
    ],
    closers: [
      "It's a present and I need it {deadline}.",
      "I hope it's not lost.",
      'Should I be worried?',
      "It's really urgent for me.",
      "I can't afford to lose that money.",
      "Please tell me it's going to be ok.",
      'I really need this sorted soon.',
      'Is something wrong?',
      "I'm going away {deadline} so time is short.",
      'I hope nobody else has my details.',
    ],
  },
  grateful: {
    openers: [
      'Thanks so much for the help earlier!',
      "Hi! Hope you're having a good day.",
      "You've been great so far,",
      'Lovely, thank you.',
      'Thanks for getting back to me!',
      'Hi there! Love your shop by the way.',
      'Great service so far!',
      'Appreciate your help,',
      'Thank you for being so quick!',
      'Brilliant,',
      'Hello! Big fan of your products.',
      'Oh great,',
    ],
    closers: [
      'thanks so much!',
      "You're a star.",
      'Really appreciate it!',
      'Have a lovely day!',
      'Cheers!',
      'Thanks a million!',
      'You guys are great.',
      'Much appreciated :)',
      'Thank you so much for your patience!',
      'Wonderful, thanks!',
    ],
  },
};

/** How often each emotion is drawn, before the intent's skew. Neutral is the most common. */
const EMOTION_WEIGHTS: Readonly<Record<string, number>> = {
  neutral: 0.38,
  frustrated: 0.15,
  angry: 0.09,
  confused: 0.13,
  worried: 0.12,
  grateful: 0.13,
};

/** What the agent says first, when the agent opens the chat. */
const AGENT_WELCOMES: readonly string[] = [
  "Hi, you're chatting with {agent} from customer support. How can I help?",
  'Welcome to support! What can I do for you today?',
  'Hello, thanks for getting in touch. How can I help?',
  "Hi, I'm {agent}. What can I help you with?",
];

/** What the agent puts before a reply, by the emotion of the user turn it answers. */
const AGENT_EMPATHY: Readonly<Record<string, readonly string[]>> = {
  neutral: ['Sure.', 'Of course.', 'Thanks for waiting.'],
  frustrated: ["I'm really sorry about this.", 'Sorry for the trouble.', "I can see why that's annoying."],
  angry: ["I'm really sorry about this.", 'I understand, and I apologise for the hassle.', 'Sorry for the trouble.'],
  confused: ['No problem, let me explain.', 'Happy to walk you through it.', 'Let me help with that.'],
  worried: ["Don't worry, we'll sort it out.", 'I understand the concern.', "Let's get this sorted."],
  grateful: ['Thank you!', "You're very kind.", 'Thanks for your patience.'],
};

const AGENT_ANYTHING_ELSE: readonly string[] = [
  'Anything else I can help with?',
  'Is there anything else?',
  'Can I help with anything else today?',
];

// ------------------------------------------------------------------------------------------------
// Slot values

const PRODUCTS: readonly string[] = [
  'sports bag',
  'wireless headphones',
  'coffee grinder',
  'yoga mat',
  'phone case',
  'desk lamp',
  'winter jacket',
  'backpack',
  'kettle',
  'air fryer',
  'bluetooth speaker',
  'sofa cushion',
  'smart watch',
  'standing desk',
  'mug set',
  'hiking pole',
  'laptop sleeve',
  'gaming mouse',
  'duvet cover',
  'electric toothbrush',
  'baby monitor',
  'rain jacket',
  'water bottle',
  'keyboard',
  'floor lamp',
  'toaster',
  'denim jacket',
  'wool scarf',
  'camping tent',
  'blender',
];
const COLORS: readonly string[] = ['black', 'navy', 'red', 'olive', 'grey', 'white', 'beige', 'green', 'pink'];
const SIZES: readonly string[] = ['S', 'M', 'L', 'XL', '8', '9', '10', '42', '12'];
const CITIES: readonly string[] = [
  'Leeds',
  'Manchester',
  'Bristol',
  'Glasgow',
  'Denver',
  'Austin',
  'Portland',
  'Toronto',
  'Dublin',
  'Cardiff',
  'Seattle',
  'Boston',
  'Brighton',
  'Melbourne',
  'Edinburgh',
  'Oxford',
];
const STREETS: readonly string[] = [
  'Mill Lane',
  'Oak Road',
  'Station Street',
  'Park Avenue',
  'High Street',
  'Church Close',
  'Queen Street',
  'Elm Grove',
];
const PAST_DATES: readonly string[] = [
  'yesterday',
  'last Monday',
  'on the 3rd',
  'two weeks ago',
  'on March 14',
  'last week',
  'three days ago',
  'on Friday',
  '10 days ago',
  'at the start of the month',
  'on the 21st',
];
const FUTURE_DATES: readonly string[] = [
  'by Friday',
  'before the weekend',
  'by the 20th',
  'tomorrow',
  'next Tuesday',
  'within two days',
  'early next week',
];
const WEEKDAYS: readonly string[] = ['Sunday', 'Saturday', 'Monday', 'Thursday', 'Friday', 'Boxing Day'];
const CODE_WORDS: readonly string[] = ['SPRING', 'WELCOME', 'SAVE', 'VIP', 'FREESHIP', 'SUMMER', 'STUDENT', 'THANKYOU'];
const NAMES: readonly string[] = ['alex', 'sam.jones', 'priya', 'tom.b', 'maria', 'k.lee', 'jo.smith', 'dan', 'ana.r'];
const DOMAINS: readonly string[] = ['mail.com', 'example.org', 'inbox.net', 'post.co.uk'];
const AGENTS: readonly string[] = ['Sam', 'Priya', 'Tom', 'Ana', 'Leo', 'Maya', 'Jon', 'Chloe'];

type Slots = Map<string, string>;

/** The value of a slot, drawn on first use in a topic and kept for the rest of it. */
function slotValue(rng: Rng, slots: Slots, name: string): string {
  const known = slots.get(name);
  if (known !== undefined) return known;
  let v: string;
  switch (name) {
    case 'order':
    case 'order2': {
      const r = rng.nextFloat();
      if (r < 0.5) v = `#${100000 + rng.nextInt(900000)}`;
      else if (r < 0.8) v = String(100000 + rng.nextInt(900000));
      else v = `EL-${10000 + rng.nextInt(90000)}`;
      break;
    }
    case 'product':
    case 'product2':
      v = pickOther(rng, PRODUCTS, slots.get(name === 'product' ? 'product2' : 'product'));
      break;
    case 'color':
    case 'color2':
      v = pickOther(rng, COLORS, slots.get(name === 'color' ? 'color2' : 'color'));
      break;
    case 'size':
      v = pick(rng, SIZES);
      break;
    case 'city':
    case 'city2':
      v = pickOther(rng, CITIES, slots.get(name === 'city' ? 'city2' : 'city'));
      break;
    case 'street':
      v = pick(rng, STREETS);
      break;
    case 'house':
      v = String(1 + rng.nextInt(120));
      break;
    case 'date':
      v = pick(rng, PAST_DATES);
      break;
    case 'deadline':
      v = pick(rng, FUTURE_DATES);
      break;
    case 'days':
      v = String(3 + rng.nextInt(19));
      break;
    case 'weekday':
      v = pick(rng, WEEKDAYS);
      break;
    case 'amount': {
      const currency = pick(rng, ['$', '£', '€']);
      const cents = pick(rng, ['', '.99', '.50', '.00']);
      v = `${currency}${5 + rng.nextInt(300)}${cents}`;
      break;
    }
    case 'percent':
      v = pick(rng, ['10', '15', '20', '25', '30', '40']);
      break;
    case 'code':
      v = `${pick(rng, CODE_WORDS)}${5 * (1 + rng.nextInt(10))}`;
      break;
    case 'email':
      v = `${pick(rng, NAMES)}${rng.nextFloat() < 0.4 ? String(rng.nextInt(100)) : ''}@${pick(rng, DOMAINS)}`;
      break;
    case 'card': {
      const last4 = String(rng.nextInt(10000)).padStart(4, '0');
      v = pick(rng, [
        'my Visa',
        'my Mastercard',
        `the card ending in ${last4}`,
        'my debit card',
        'my Amex',
        `my credit card ending ${last4}`,
        `a Visa ending in ${last4}`,
      ]);
      break;
    }
    case 'agent':
      v = pick(rng, AGENTS);
      break;
    default:
      throw new Error(`unknown slot {${name}}`); // a template bug, caught by the tests
  }
  slots.set(name, v);
  return v;
}

// ------------------------------------------------------------------------------------------------
// Writing turns

/** Fills `[a|b]` alternatives, then `{slot}`s. */
function fill(rng: Rng, slots: Slots, template: string): string {
  const chosen = template.replace(/\[([^[\]]*)\]/g, (_, alts: string) => pick(rng, alts.split('|')));
  return chosen.replace(/\{(\w+)\}/g, (_, name: string) => slotValue(rng, slots, name));
}

const I_WORDS = /^I(?:'m|'ve|'d|'ll)?$/;

/**
 * `opener core closer`, with the core's first letter lowered after an opener ending in a comma,
 * and a full stop before the closer when the core has no final punctuation.
 */
function join(opener: string, core: string, closer: string): string {
  let text = core;
  if (opener !== '') {
    const first = text.split(' ')[0] ?? '';
    const lower = opener.endsWith(',') && !I_WORDS.test(first) && first.slice(1) === first.slice(1).toLowerCase();
    text = `${opener} ${lower ? text.charAt(0).toLowerCase() + text.slice(1) : text}`;
  }
  if (closer === '') return text;
  return /[.!?:)]$/.test(text) ? `${text} ${closer}` : `${text}. ${closer}`;
}

/** Ends the text with emotional punctuation ("!!!", "??", "...") where the emotion asks for it. */
function punctuate(rng: Rng, text: string, emotion: string): string {
  const base = text.replace(/[.!?]+$/, '');
  const last = text.slice(base.length);
  const question = last.includes('?');
  const r = rng.nextFloat();
  switch (emotion) {
    case 'angry':
      if (r < 0.5) return base + pick(rng, question ? ['?!', '?!!', '??'] : ['!!!', '!', '!!']);
      break;
    case 'frustrated':
      if (r < 0.3) return base + (question ? '??' : pick(rng, ['!', '...']));
      break;
    case 'confused':
      if (r < 0.4) return base + (question ? pick(rng, ['??', '???']) : '...');
      break;
    case 'worried':
      if (r < 0.3) return base + (question ? '?' : '...');
      break;
    case 'grateful':
      if (r < 0.4 && !question) return `${base}!`;
      break;
    default:
      if (r < 0.1) return base; // no final punctuation at all
  }
  return text;
}

/** One typo in a word of 4+ letters: two letters swapped, one dropped, or one doubled. */
function typo(rng: Rng, text: string): string {
  const words = text.split(' ');
  const candidates = words.map((w, i) => (/^[a-z]{4,}$/.test(w) ? i : -1)).filter((i) => i >= 0);
  if (candidates.length === 0) return text;
  const wi = pick(rng, candidates);
  const w = words[wi] as string;
  const at = 1 + rng.nextInt(w.length - 2);
  const kind = rng.nextInt(3);
  if (kind === 0) words[wi] = w.slice(0, at) + (w[at + 1] ?? '') + (w[at] ?? '') + w.slice(at + 2);
  else if (kind === 1) words[wi] = w.slice(0, at) + w.slice(at + 1);
  else words[wi] = w.slice(0, at) + (w[at] ?? '') + w.slice(at);
  return words.join(' ');
}

/**
 * A user turn: the core text of the intent, dressed in the emotion. Non-neutral emotions get an
 * opener, a closer or punctuation most of the time, and no marker at all about one time in ten.
 */
function userTurn(rng: Rng, slots: Slots, core: string, intent: string, emotion: string): DialogueTurn {
  let text = fill(rng, slots, core);
  const markers = EMOTION_MARKERS[emotion] as { openers: readonly string[]; closers: readonly string[] };
  let opener = '';
  let closer = '';
  // A greeting or a goodbye is itself an opener or a closer: it gets only a closer.
  const closerOnly = intent === 'greeting' || intent === 'goodbye';
  if (emotion === 'neutral') {
    if (!closerOnly && rng.nextFloat() < 0.3) opener = pick(rng, markers.openers);
    if (intent !== 'goodbye' && rng.nextFloat() < 0.2) closer = pick(rng, markers.closers);
    text = punctuate(rng, text, emotion);
  } else if (rng.nextFloat() < 0.9) {
    const r = closerOnly ? 1 : rng.nextFloat();
    const both = rng.nextFloat() < 0.25;
    if (r < 0.55 || both) opener = closerOnly ? '' : pick(rng, markers.openers);
    if (r >= 0.55 || both) closer = pick(rng, markers.closers);
    text = punctuate(rng, text, emotion);
    if (emotion === 'angry' && rng.nextFloat() < 0.12) text = text.toUpperCase();
  }
  if (rng.nextFloat() < 0.1) text = typo(rng, text);
  text = join(fill(rng, slots, opener), text, fill(rng, slots, closer));
  if (rng.nextFloat() < 0.12) text = text.toLowerCase();
  return { speaker: 'user', text, intent, emotion };
}

/**
 * An agent turn answering a user turn: sometimes a line for the user's emotion first (none when
 * `userEmotion` is undefined), sometimes an offer of more help after.
 */
function agentTurn(
  rng: Rng,
  slots: Slots,
  reply: string,
  userEmotion: string | undefined,
  offerMore: boolean,
): DialogueTurn {
  let text = fill(rng, slots, reply);
  if (userEmotion !== undefined && rng.nextFloat() < (userEmotion === 'neutral' ? 0.2 : 0.5)) {
    text = `${pick(rng, AGENT_EMPATHY[userEmotion] as readonly string[])} ${text}`;
  }
  if (offerMore && rng.nextFloat() < 0.35) text = `${text} ${pick(rng, AGENT_ANYTHING_ELSE)}`;
  return { speaker: 'agent', text };
}

/** The emotion of the next user turn: often the previous one, else drawn with the intent's skew. */
function drawEmotion(rng: Rng, intent: string, previous: string | undefined): string {
  const skew = (INTENT_TEMPLATES[intent] as IntentTemplates).emotionSkew ?? {};
  if (previous !== undefined && rng.nextFloat() < 0.6 && (skew[previous] ?? 1) >= 1) return previous;
  const weights = SUPPORT_EMOTIONS.map((e) => (EMOTION_WEIGHTS[e] as number) * (skew[e] ?? 1));
  return SUPPORT_EMOTIONS[weightedIndex(rng, weights)] as string;
}

/** User turns per dialogue: 2..6, with 4 and 5 the most common. */
const USER_TURN_WEIGHTS = [0.1, 0.2, 0.25, 0.25, 0.2];

/** Dialogue `index` of the set for `seed`: its own Rng stream, so it does not depend on the count. */
function generateDialogue(seed: number, index: number): Dialogue {
  const rng = new Rng(seed, index);
  const turns: DialogueTurn[] = [];
  const target = 2 + weightedIndex(rng, USER_TURN_WEIGHTS);
  let emotion: string | undefined;

  const say = (slots: Slots, core: string, intent: string): void => {
    emotion = drawEmotion(rng, intent, emotion);
    turns.push(userTurn(rng, slots, core, intent, emotion));
  };
  const answer = (slots: Slots, reply: string, offerMore: boolean, empathy = true): void => {
    turns.push(agentTurn(rng, slots, reply, empathy ? (emotion ?? 'neutral') : undefined, offerMore));
  };

  if (rng.nextFloat() < 0.3) turns.push({ speaker: 'agent', text: fill(rng, new Map(), pick(rng, AGENT_WELCOMES)) });
  const greet = target >= 3 && rng.nextFloat() < 0.4;
  const bye = rng.nextFloat() < 0.5;
  let budget = target - (greet ? 1 : 0) - (bye ? 1 : 0); // user turns left for topics, >= 1

  if (greet) {
    const t = INTENT_TEMPLATES.greeting as IntentTemplates;
    const slots: Slots = new Map();
    say(slots, pick(rng, t.requests), 'greeting');
    answer(slots, pick(rng, t.replies), false, false);
  }
  const used = new Set<string>();
  while (budget > 0) {
    let intent = pick(rng, TOPIC_INTENTS);
    while (used.has(intent)) intent = pick(rng, TOPIC_INTENTS);
    used.add(intent);
    const t = INTENT_TEMPLATES[intent] as IntentTemplates;
    const slots: Slots = new Map();
    say(slots, pick(rng, t.requests), intent);
    budget--;
    // The agent asks for what the request left out (an order number, an email), and the user's
    // short answer carries the topic's intent only through the context.
    if (t.ask !== undefined && !slots.has(t.ask.slot) && budget > 0 && rng.nextFloat() < 0.4) {
      turns.push({ speaker: 'agent', text: pick(rng, t.ask.questions) });
      say(slots, pick(rng, ANSWERS[t.ask.slot]), intent);
      budget--;
    }
    let reply = pick(rng, t.replies);
    answer(slots, reply, budget === 0);
    if (budget > 0 && rng.nextFloat() < 0.3) {
      const bySlot = t.ask !== undefined ? SLOT_FOLLOW_UPS[t.ask.slot] : undefined;
      const r = rng.nextFloat();
      let pool = FOLLOW_UPS;
      if (bySlot !== undefined && r < 0.35) pool = bySlot;
      else if (t.informational !== true && r < 0.7) pool = ACTION_FOLLOW_UPS;
      say(slots, pick(rng, pool), intent);
      budget--;
      reply = pickOther(rng, t.replies, reply);
      answer(slots, reply, budget === 0);
    }
  }
  if (bye) {
    const t = INTENT_TEMPLATES.goodbye as IntentTemplates;
    const slots: Slots = new Map();
    say(slots, pick(rng, t.requests), 'goodbye');
    answer(slots, pick(rng, t.replies), false, false);
  }
  return { id: `support-${seed}-${String(index).padStart(4, '0')}`, turns };
}

// ------------------------------------------------------------------------------------------------
// API

/**
 * Writes `dialogues` customer-service conversations (default 600, which hold 2,517 user turns
 * with seed 1) from `seed` (default 1). Deterministic: the same seed gives the same dialogues,
 * and dialogue i is the same whatever the count. Every user turn has an `intent` from
 * {@link SUPPORT_INTENTS} and an `emotion` from {@link SUPPORT_EMOTIONS}; agent turns have
 * neither.
 *
 * @example
 * ```ts
 * const dialogues = generateSupportDialogues({ seed: 7, dialogues: 100 });
 * dialogues[0].turns.filter((t) => t.speaker === 'user').map((t) => t.intent);
 * ```
 */
export function generateSupportDialogues(options: GenerateSupportDialoguesOptions = {}): Dialogue[] {
  if (typeof options !== 'object' || (options as unknown) === null) {
    throw expected(InputError, 'an object', 'options', options);
  }
  const seed = options.seed ?? 1;
  const count = options.dialogues ?? 600;
  if (!Number.isSafeInteger(seed)) throw expected(InputError, 'a safe integer', 'options.seed', seed);
  if (!Number.isSafeInteger(count) || count < 1) {
    throw expected(InputError, 'a positive integer', 'options.dialogues', count);
  }
  return Array.from({ length: count }, (_, i) => generateDialogue(seed, i));
}

/**
 * Splits dialogues into a training and a test set by conversation: a dialogue's turns are all on
 * one side. The dialogues are shuffled (seeded) and `round(testFraction * n)` of them go to the
 * test set, at least one on each side when 0 < testFraction < 1 and there are two or more. Both
 * sides keep the input order.
 *
 * @example
 * ```ts
 * const { train, test } = splitDialogues(generateSupportDialogues(), { testFraction: 0.2, seed: 1 });
 * ```
 */
export function splitDialogues(
  dialogues: readonly Dialogue[],
  options: SplitDialoguesOptions,
): { train: Dialogue[]; test: Dialogue[] } {
  checkDialogues(dialogues);
  if (typeof options !== 'object' || (options as unknown) === null) {
    throw expected(InputError, 'an object { testFraction, seed }', 'options', options);
  }
  const { testFraction, seed } = options;
  if (typeof testFraction !== 'number' || !(testFraction >= 0 && testFraction <= 1)) {
    throw expected(InputError, 'a number in [0, 1]', 'options.testFraction', testFraction);
  }
  if (!Number.isSafeInteger(seed)) throw expected(InputError, 'a safe integer', 'options.seed', seed);
  const n = dialogues.length;
  let nTest = Math.round(testFraction * n);
  if (testFraction > 0 && testFraction < 1 && n >= 2) nTest = Math.min(Math.max(nTest, 1), n - 1);
  const order = new Rng(seed).shuffle(Array.from({ length: n }, (_, i) => i));
  const isTest = new Uint8Array(n);
  for (let k = 0; k < nTest; k++) isTest[order[k] as number] = 1;
  const train: Dialogue[] = [];
  const test: Dialogue[] = [];
  dialogues.forEach((d, i) => (isTest[i] === 1 ? test : train).push(d));
  return { train, test };
}

/**
 * One example per user turn, in the shape `fineTune` takes: `text` the turn, `label` its intent
 * or emotion, `context` the `contextTurns` turns before it (user and agent, oldest first; left out
 * when contextTurns is 0), `group` the dialogue id (the default group field of `evalSplit`).
 *
 * @example
 * ```ts
 * const examples = dialogueExamples(train, { field: 'emotion', contextTurns: 0 });
 * await model.fineTune(examples, { epochs: 3, evalSplit: { fraction: 0.1 } });
 * ```
 */
export function dialogueExamples(dialogues: readonly Dialogue[], options: DialogueExamplesOptions): DialogueExample[] {
  checkDialogues(dialogues);
  if (typeof options !== 'object' || (options as unknown) === null) {
    throw expected(InputError, 'an object { field, contextTurns? }', 'options', options);
  }
  const { field } = options;
  const contextTurns = options.contextTurns ?? 2;
  if (field !== 'intent' && field !== 'emotion') {
    throw expected(InputError, "'intent' or 'emotion'", 'options.field', field);
  }
  if (!Number.isSafeInteger(contextTurns) || contextTurns < 0) {
    throw expected(InputError, 'a non-negative integer', 'options.contextTurns', contextTurns);
  }
  const out: DialogueExample[] = [];
  for (const d of dialogues) {
    d.turns.forEach((turn, t) => {
      if (turn.speaker !== 'user') return;
      const label = turn[field];
      if (label === undefined) throw expected(InputError, `a ${field}`, `dialogue ${d.id} turn ${t}`, label);
      const ex: DialogueExample = { text: turn.text, label, group: d.id };
      if (contextTurns > 0) ex.context = d.turns.slice(Math.max(0, t - contextTurns), t).map((p) => p.text);
      out.push(ex);
    });
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Helpers

/** Throws unless v is an array; unlike Array.isArray, does not narrow a readonly array to any[]. */
function checkDialogues(v: unknown): void {
  if (!Array.isArray(v)) throw expected(InputError, 'an array of dialogues', 'dialogues', v);
}

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[rng.nextInt(items.length)] as T;
}

/** A random item other than `avoid` (when there is another). */
function pickOther(rng: Rng, items: readonly string[], avoid: string | undefined): string {
  for (;;) {
    const v = pick(rng, items);
    if (v !== avoid || items.length < 2) return v;
  }
}

function weightedIndex(rng: Rng, weights: readonly number[]): number {
  let total = 0;
  for (const w of weights) total += w;
  let r = rng.nextFloat() * total;
  for (let i = 0; i < weights.length; i++) {
    r -= weights[i] as number;
    if (r < 0) return i;
  }
  return weights.length - 1;
}
